"""Options of ``mnist-onnx export`` and ``mnist-onnx quantize`` (standard library imports only)."""

from __future__ import annotations

import argparse

from .._argtypes import positive_int as _positive_int


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001 - argparse's own type
    """Add this area's subcommands to the ``mnist-onnx`` parser."""
    export = sub.add_parser(
        "export",
        help="convert a trained Keras model to ONNX, kept only if it passes the parity gate (needs the 'export' extra)",
        description=(
            "Convert MODEL.keras to ONNX with tf2onnx, clean up the graph, and check it against Keras on real "
            "digits plus edge inputs at two batch sizes (max probability difference 1e-5, same predicted digit), "
            "with onnx.checker and onnx's reference evaluator.  Only a model that passes is written, with its "
            "parity report beside it (OUT.parity.json); otherwise the command exits with status 3 and writes "
            "nothing."
        ),
    )
    export.add_argument(
        "model",
        metavar="MODEL.keras",
        help="trained Keras model (a report.json beside it is recorded in the ONNX metadata)",
    )
    export.add_argument("--out", required=True, metavar="MODEL.onnx", help="ONNX file to write")
    export.add_argument("--opset", type=int, default=18, help="ONNX opset, 13 to 18 (default: 18)")
    export.add_argument(
        "--validation",
        metavar="CSV",
        help="Kaggle train- or test-format CSV whose first rows (at least 1,000) the parity gate "
        "runs (default: the bundled sample of 1,000 real held-out digits)",
    )
    export.add_argument(
        "--layout",
        choices=("NCHW", "NHWC"),
        default="NCHW",
        help="input layout of the ONNX model (default: NCHW, N×1×28×28)",
    )
    export.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    export.set_defaults(handler=_run_export)

    quantize = sub.add_parser(
        "quantize",
        help="make a static int8 model, kept only if it passes the accuracy gate (needs the 'export' extra)",
        description=(
            "Quantize MODEL.onnx (an fp32 model written by 'mnist-onnx export') to int8 with onnxruntime, "
            "calibrated on the first rows of a Kaggle train.csv.  The int8 model is written (with "
            "OUT.quantization.json beside it) only if, on held-out labelled digits, it predicts the same digit "
            "as the fp32 model on at least 99.8% of them and loses at most 0.1 percentage points of accuracy; "
            "otherwise the command exits with status 3 and writes nothing."
        ),
    )
    quantize.add_argument("model", metavar="MODEL.onnx", help="fp32 ONNX model")
    quantize.add_argument(
        "--calibration",
        required=True,
        metavar="TRAIN_CSV",
        help="Kaggle train.csv (label,pixel0..pixel783), may be gzipped",
    )
    quantize.add_argument("--out", required=True, metavar="MODEL.int8.onnx", help="int8 ONNX file to write")
    quantize.add_argument(
        "--evaluation",
        metavar="CSV",
        help="labelled held-out digits for the accuracy gate, never calibrated on "
        "(default: the bundled sample of 1,000 real held-out digits)",
    )
    quantize.add_argument(
        "--calibration-rows",
        type=_positive_int,
        default=1000,
        metavar="N",
        help="calibrate on the first N rows of TRAIN_CSV (default: 1000)",
    )
    quantize.add_argument(
        "--first-conv",
        choices=("float", "int8"),
        default="float",
        help="keep the first convolution in float (default; faster on the CPU: its single input "
        "channel makes onnxruntime's int8 kernel inefficient) or quantize it too",
    )
    quantize.add_argument(
        "--input",
        choices=("uint8", "float"),
        default="uint8",
        dest="input_type",
        help="the int8 model's input: raw uint8 pixels it scales itself (default; the runtime "
        "then skips the conversion to float) or the fp32 model's float input",
    )
    quantize.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    quantize.set_defaults(handler=_run_quantize)


def _run_export(args: argparse.Namespace) -> int:
    from .._progress import status_printer
    from .._tf_logging import quiet_tensorflow_logs

    quiet_tensorflow_logs()  # before TensorFlow is first imported
    from .convert import export_onnx

    emit = status_printer(args.quiet)
    export_onnx(
        args.model, args.out, validation_csv=args.validation, opset=args.opset, layout=args.layout, progress=emit
    )
    return 0


def _run_quantize(args: argparse.Namespace) -> int:
    from .._progress import status_printer
    from .quantize import QuantOptions, quantize_int8

    emit = status_printer(args.quiet)
    options = QuantOptions(float_first_conv=args.first_conv == "float", uint8_input=args.input_type == "uint8")
    quantize_int8(
        args.model,
        args.out,
        calibration_csv=args.calibration,
        evaluation_csv=args.evaluation,
        calibration_rows=args.calibration_rows,
        options=options,
        progress=emit,
    )
    return 0
