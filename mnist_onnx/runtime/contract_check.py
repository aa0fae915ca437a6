"""Never silently wrong: check a model's input contract and the polarity of the data on real digits.

A model that was trained on raw 0-255 pixels, or on PyTorch's normalised
pixels, still returns ten scores when it is fed pixels/255: the answers are
just wrong.  A model without ``mnist_onnx.*`` metadata is therefore scored on
the bundled labelled sample (1,000 held-out MNIST digits) when it is loaded;
if the accuracy is low or the predictions collapse onto a few classes, the
usual input conventions are tried and a warning names the option that works.

The same goes for data: MNIST digits are light on black, so a batch whose
images mostly have bright borders (a scan or a paint program's output, dark on
light) is flagged.
"""

from __future__ import annotations

import functools
import gzip
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ContractWarning, InvertedDigitsWarning

__all__ = [
    "InputConvention",
    "USUAL_CONVENTIONS",
    "ContractWarning",
    "InvertedDigitsWarning",
    "ContractCheck",
    "check_contract",
    "check_model",
    "check_at_load",
    "convention_of",
    "count_bright_borders",
    "inverted_message",
    "labelled_sample",
    "MNIST_MEAN",
    "MNIST_STD",
]

#: Mean and standard deviation of MNIST's training pixels scaled to [0, 1], as used by
#: PyTorch's MNIST example (``transforms.Normalize((0.1307,), (0.3081,))``).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081

#: Below this accuracy on the labelled sample the contract is questioned.  Fed
#: correctly, even a 784x10 softmax regression scores 85% on MNIST digits.
MIN_ACCURACY = 0.90
#: Predictions "collapse" when one class takes more than this share of the sample
#: (each digit is about 10% of MNIST).
MAX_CLASS_SHARE = 0.5

#: Digits of the bundled sample scored at load: enough to tell 90% from a wrong
#: contract's 10-30% (the standard error of an accuracy near 90% is 1.3 points).
SAMPLE_SIZE = 500
#: When the contract in use scores well, each alternative is first tried on this many
#: digits, and named only if it beats the contract in use by MIN_GAIN on all of them.
SCREEN_SIZE = 200
MIN_GAIN = 0.05

_SAMPLE = Path(__file__).parent / "bundled" / "sample.csv.gz"


@dataclass(frozen=True)
class InputConvention:
    """One way to turn 0-255 pixels into a model's float input: ``((p or 255 - p) x scale - mean) / std``.

    Attributes:
        name: How a message names it ("pixels/255").
        pixel_scale: Factor applied to each pixel.
        normalize: ``(mean, std)`` applied after scaling, or None.
        inverted: Whether pixels are inverted (255 - p) first.
        fix: The command-line option that selects it ("" for the default).
        python_fix: The same for Python.
    """

    name: str
    pixel_scale: float
    normalize: tuple[float, float] | None = None
    inverted: bool = False
    fix: str = ""
    python_fix: str = ""

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """Float32 model input from uint8 pixels of any shape."""
        values = pixels.astype(np.float32)
        if self.inverted:
            values = np.float32(255.0) - values
        values = values * np.float32(self.pixel_scale)
        if self.normalize is not None:
            mean, std = self.normalize
            values = (values - np.float32(mean)) / np.float32(std)
        return values.astype(np.float32, copy=False)


USUAL_CONVENTIONS: tuple[InputConvention, ...] = (
    InputConvention("pixels/255", 1 / 255, fix="--pixel-scale 1/255", python_fix="pixel_scale=1/255"),
    InputConvention("raw 0-255 pixels", 1.0, fix="--pixel-scale 1", python_fix="pixel_scale=1"),
    InputConvention(
        f"MNIST mean/std ({MNIST_MEAN}, {MNIST_STD})",
        1 / 255,
        (MNIST_MEAN, MNIST_STD),
        fix=f"--normalize {MNIST_MEAN},{MNIST_STD}",
        python_fix=f"normalize=({MNIST_MEAN}, {MNIST_STD})",
    ),
    InputConvention(
        "inverted pixels (255 - p)/255",
        1 / 255,
        inverted=True,
        fix="inverting the digits (the model expects dark on light)",
        python_fix="inverting the digits (255 - pixels)",
    ),
)


@dataclass(frozen=True)
class ContractCheck:
    """The outcome of :func:`check_contract`.

    Attributes:
        accuracy: Accuracy on the labelled sample under the contract in use.
        largest_class_share: Share of the sample predicted as the most frequent class.
        tried: ``(convention, accuracy)`` for each alternative tried (empty when
            the contract in use looked right).
        message: The warning to give, or None.
    """

    accuracy: float
    largest_class_share: float
    tried: tuple[tuple[InputConvention, float], ...]
    message: str | None


@functools.lru_cache(maxsize=1)
def labelled_sample() -> tuple[np.ndarray, np.ndarray]:
    """The bundled 1,000 held-out MNIST digits: uint8 (1000, 28, 28) pixels and int64 (1000,) labels."""
    with gzip.open(_SAMPLE, "rt", encoding="ascii") as handle:
        handle.readline()
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    pixels = table[:, 1:].astype(np.uint8).reshape(-1, 28, 28)
    pixels.flags.writeable = False
    labels = table[:, 0]
    labels.flags.writeable = False
    return pixels, labels


def _score(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    predicted = np.asarray(run(x)).argmax(axis=1)
    share = float(np.bincount(predicted, minlength=10).max()) / len(predicted)
    return float((predicted == labels).mean()), share


def check_contract(
    run: Callable[[np.ndarray], np.ndarray],
    current: InputConvention,
    *,
    model_name: str = "the model",
    conventions: Sequence[InputConvention] = USUAL_CONVENTIONS,
) -> ContractCheck:
    """Score a model on the labelled sample under its contract; if it looks wrong, find one that works.

    Args:
        run: Maps float32 model input shaped (N, 28, 28) to class scores (N, 10)
            (the caller reshapes to the model's layout and casts).
        current: The convention the run will use (from metadata, flags or defaults).
        model_name: How the message names the model.
        conventions: Alternatives to try.

    Returns:
        A :class:`ContractCheck`; its ``message`` is None when the contract looks right.
    """
    pixels, labels = labelled_sample()
    pixels, labels = pixels[:SAMPLE_SIZE], labels[:SAMPLE_SIZE]
    accuracy, share = _score(run, current.apply(pixels), labels)
    alternatives = [c for c in conventions if c != current]
    if accuracy >= MIN_ACCURACY and share <= MAX_CLASS_SHARE:
        # Looks right; but a model fed nearly right (a normalisation left out) can still score
        # around 90%: screen the alternatives on fewer digits, and confirm any that does much better.
        screen = slice(0, SCREEN_SIZE)
        better = [
            c for c in alternatives if _score(run, c.apply(pixels[screen]), labels[screen])[0] >= accuracy + MIN_GAIN
        ]
        confirmed = [(c, _score(run, c.apply(pixels), labels)[0]) for c in better]
        confirmed = [(c, a) for c, a in confirmed if a >= accuracy + MIN_GAIN]
        if not confirmed:
            return ContractCheck(accuracy, share, (), None)
        tried = tuple(confirmed)
    else:
        tried = tuple((c, _score(run, c.apply(pixels), labels)[0]) for c in alternatives)
    symptom = f"scores {accuracy:.1%}" + (
        f", {share:.0%} of its predictions one class," if share > MAX_CLASS_SHARE else ""
    )
    head = f"{model_name} {symptom} on {len(labels):,} held-out MNIST digits with {current.name}"
    best, best_accuracy = max(tried, key=lambda item: item[1]) if tried else (current, accuracy)
    others = ", ".join(f"{a:.1%} with {c.name}" for c, a in tried if c != best)
    if best_accuracy >= MIN_ACCURACY and best_accuracy > accuracy:
        verb = "pass" if best.fix.startswith("--") else "try"
        message = f"{head} and {best_accuracy:.1%} with {best.name}: {verb} {best.fix} (Python: {best.python_fix})"
        if others:
            message += f" (also tried: {others})"
    else:
        message = (
            f"{head}; none of the usual input conventions does better ({others or 'none tried'}): "
            f"check the model's input contract (--pixel-scale, --normalize)"
        )
    return ContractCheck(accuracy, share, tried, message)


def count_bright_borders(pixels: np.ndarray) -> int:
    """How many images have a mostly bright outer 2-pixel frame (mean above half the range).

    Args:
        pixels: Images shaped (N, 28, 28), (N, 28, 28, 1) or (N, 784): uint8 0-255
            or float in [0, 1].

    Returns:
        The count; MNIST's frames are black, so a dark-on-light digit counts.
    """
    images = np.asarray(pixels).reshape(-1, 28, 28)
    if len(images) == 0:
        return 0
    frame = np.ones((28, 28), dtype=bool)
    frame[2:-2, 2:-2] = False
    half = 127.5 if images.dtype == np.uint8 else 0.5
    return int((images[:, frame].mean(axis=1) > half).sum())


def inverted_message(bright: int, count: int, where: str = "the input") -> str | None:
    """The warning for data whose digits look dark on light, or None when most look like MNIST.

    >>> inverted_message(9, 10, "test.csv")[:45]
    'test.csv: 9 of 10 images have bright borders:'
    >>> inverted_message(1, 10) is None
    True
    """
    if count == 0 or bright * 2 <= count:
        return None
    return (
        f"{where}: {bright:,} of {count:,} images have bright borders: the digits look dark on "
        f"light, but MNIST digits are light on black; invert them (255 - pixel, or --invert yes) "
        f"or the predictions will be wrong"
    )


def convention_of(pixel_scale: float, normalize: tuple[float, float] | None) -> InputConvention:
    """The usual convention with this scale and normalisation, or a new one described by its numbers."""
    for convention in USUAL_CONVENTIONS:
        if (
            not convention.inverted
            and np.isclose(convention.pixel_scale, pixel_scale)
            and (
                convention.normalize == normalize
                or convention.normalize is not None
                and normalize is not None
                and np.allclose(convention.normalize, normalize)
            )
        ):
            return convention
    name = "pixels/255" if np.isclose(pixel_scale, 1 / 255) else f"pixels x {pixel_scale:g}"
    if normalize is not None:
        name += f", mean/std ({normalize[0]:g}, {normalize[1]:g})"
    return InputConvention(name, pixel_scale, normalize)


def check_model(contract: Any, raw_scores: Callable[[np.ndarray], np.ndarray], model_name: str) -> str | None:
    """:func:`check_contract` for a classifier's contract (its ``pixel_scale`` and ``normalize``).

    Args:
        contract: A :class:`~.contract.ModelContract`.
        raw_scores: The model's class scores for float32 input (N, 28, 28) in the model's units.
        model_name: Named in the message.

    Returns:
        The warning message, or None when the model scores well as it is fed.
    """
    current = convention_of(contract.pixel_scale, contract.normalize)
    return check_contract(raw_scores, current, model_name=model_name).message


def check_at_load(classifier: Any) -> list[str]:
    """Check a freshly loaded :class:`~.predictor.DigitClassifier`; warn and return what looks wrong.

    Models with ``mnist_onnx.*`` metadata (the exporter's, the bundled ones) and
    uint8-input models (which scale pixels themselves) are trusted as they are.

    Returns:
        The warning messages (each also emitted as a :class:`ContractWarning`).
    """
    contract = classifier.contract
    if contract.has_metadata or contract.uint8_input:
        return []

    def raw_scores(x: np.ndarray) -> np.ndarray:
        shaped = x.reshape((len(x), *classifier._to_input.input_shape))
        if contract.input_type == "float16":
            shaped = shaped.astype(np.float16)
        return np.asarray(classifier._scores(shaped))

    message = check_model(contract, raw_scores, classifier.model_name)
    if message is None:
        return []
    # stacklevel 3: the caller of DigitClassifier(...), not its __init__.
    warnings.warn(ContractWarning(message), stacklevel=3)
    return [message]
