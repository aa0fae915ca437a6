"""``mnist-onnx inspect MODEL``, and the option types shared with ``predict`` for a model's input contract.

Standard library imports only at the top, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from fractions import Fraction

__all__ = ["pixel_scale_arg", "normalize_arg", "add_contract_options", "register", "run_inspect"]


def pixel_scale_arg(text: str) -> float:
    """``--pixel-scale``: a positive number or fraction ("1", "0.5", "1/255").

    >>> pixel_scale_arg("1/255") == 1 / 255
    True
    """
    try:
        value = float(Fraction(text.strip())) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"expected a positive number or fraction (1, 1/255), got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number or fraction (1, 1/255), got {text!r}")
    return value


def normalize_arg(text: str) -> tuple[float, float]:
    """``--normalize MEAN,STD``: two numbers, STD positive.

    >>> normalize_arg("0.1307,0.3081")
    (0.1307, 0.3081)
    """
    parts = text.split(",")
    try:
        mean, std = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MEAN,STD (e.g. 0.1307,0.3081), got {text!r}") from None
    if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
        raise argparse.ArgumentTypeError(f"expected MEAN,STD with a positive STD, got {text!r}")
    return mean, std


def add_contract_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how a model wants its input (``predict`` and ``inspect``)."""
    group = parser.add_argument_group(
        "model input contract",
        "for models not exported by mnist-onnx (whose metadata says all this); a model without that metadata "
        "is checked on held-out digits at load, and a warning names the option that works",
    )
    group.add_argument(
        "--pixel-scale",
        type=pixel_scale_arg,
        metavar="S",
        help="float input = pixel (0-255) x S; 1 for a model that divides by 255 itself "
        "(default: the model's mnist_onnx.pixel_scale metadata, else 1/255)",
    )
    group.add_argument(
        "--normalize",
        type=normalize_arg,
        metavar="MEAN,STD",
        help="input = (pixel x S - MEAN) / STD, e.g. 0.1307,0.3081 for PyTorch's MNIST Normalize "
        "(default: the model's mnist_onnx.normalize metadata, else none)",
    )
    group.add_argument(
        "--output", metavar="NAME", help="the model output holding the class scores (default: its only Nx10 output)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``inspect`` to the ``mnist-onnx`` parser."""
    inspect = sub.add_parser(
        "inspect",
        help="show how the runtime will feed a model, and its accuracy on held-out digits",
        description=(
            "Print the input contract the runtime will use for MODEL (input, output, pixel scale, "
            "normalisation, labels) and where each part came from (the model's metadata, its signature, an "
            "option, or the default), then the model's accuracy on the bundled 1,000 labelled held-out MNIST "
            "digits under that contract."
        ),
    )
    inspect.add_argument("model", metavar="MODEL", help="an ONNX model file")
    add_contract_options(inspect)
    inspect.set_defaults(handler=run_inspect)


def run_inspect(args: argparse.Namespace) -> int:
    """Print the contract and the accuracy on the bundled sample; warnings go to stderr."""
    from .contract_check import labelled_sample
    from .metadata import parse_metadata
    from .predictor import DigitClassifier

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = DigitClassifier(
            args.model, providers="cpu", pixel_scale=args.pixel_scale, normalize=args.normalize, output=args.output
        )
    contract = classifier.contract
    declared = parse_metadata(classifier.session.get_modelmeta().custom_metadata_map)
    print(f"model: {classifier.model_name}")
    for part, origin in contract.sources:
        value = {
            "pixel_scale": _scale_text(contract.pixel_scale),
            "normalize": "none"
            if contract.normalize is None
            else f"mean {contract.normalize[0]:g}, std {contract.normalize[1]:g}",
        }.get(part)
        print(f"{part}: {value} ({origin})" if value is not None else f"{part}: {origin}")
    labels = contract.class_labels
    shown = "0-9" if labels == tuple(range(10)) else ", ".join(map(str, labels))
    print(f"class labels: {shown} ({'metadata' if declared.class_labels is not None else 'default'})")
    print(f"output kind: {contract.output_kind} ({'metadata' if declared.output_kind else 'probe run'})")
    print(f"batch: {contract.fixed_batch or 'any size'}; precision: {contract.precision or 'not stated'}")
    pixels, truth = labelled_sample()
    predicted = classifier.predict(pixels)
    correct = int((predicted == truth).sum())
    print(
        f"accuracy on {len(truth):,} held-out MNIST digits (bundled sample): {correct / len(truth):.2%} "
        f"({correct:,} correct)"
    )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return 0


def _scale_text(scale: float) -> str:
    if math.isclose(scale, 1 / 255):
        return "1/255"
    return f"{scale:g}"
