"""``mnist-onnx predict``: its options, and its two engines (this process, or a Ray Data pipeline).

Standard library imports only at the top, so ``--help`` stays fast; the local
engine imports onnxruntime and the Ray engine imports Ray when they run.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .._argtypes import positive_int as _positive_int
from .._progress import status_printer
from ..errors import ContractWarning, MnistOnnxError, ProviderFallbackWarning
from ._types import PRECISIONS
from .defaults import DEFAULT_BATCH_SIZE, DEFAULT_CUDA_BATCH_SIZE, DEFAULT_OPENVINO_BATCH_SIZE
from .inspect_cli import add_contract_options
from .inspect_cli import register as register_inspect
from .model_source import bundled_sample_path

if TYPE_CHECKING:
    import pandas as pd

    from .results import Evaluation

SAMPLE = bundled_sample_path()


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's subcommands to the ``mnist-onnx`` parser."""
    predict = sub.add_parser(
        "predict",
        help="predict the digits in a Kaggle CSV or in image files with onnxruntime (no TensorFlow needed)",
        description=(
            "Predict every row of a Kaggle test.csv (or train.csv) with an ONNX digit classifier and, with "
            "--out, write a Kaggle submission (ImageId,Label). With no input, run the model over the bundled "
            "sample of 1,000 labelled held-out digits and print what it did. When the CSV has a label "
            "column, the label is not shown to the model; it is used to report the accuracy. "
            "Image files (PNG, JPEG, BMP, GIF, TIFF, WebP), folders of them and glob patterns are prepared "
            "the way MNIST's digits were (cropped, fitted in 20x20, centred by centre of mass in 28x28) and "
            "predicted in input order: the output is path,Label (to --out, or printed)."
        ),
    )
    predict.add_argument(
        "csv",
        nargs="*",
        metavar="INPUT",
        help="Kaggle test.csv or train.csv, may be gzipped (default: the bundled sample), or "
        "image files, folders and glob patterns; with --engine ray, any number of CSVs",
    )
    predict.add_argument("--model", metavar="PATH", help="ONNX model (default: the bundled model of --precision)")
    predict.add_argument(
        "--out",
        metavar="PATH",
        help="write the predictions here (ImageId,Label for a CSV, path,Label for images), replaced "
        "only when complete; "
        "'-' writes them to standard output (the summary then goes to standard error); "
        "a name ending in .gz is gzipped. Refused if it names an input",
    )
    predict.add_argument(
        "--labels",
        metavar="ANSWERS.csv",
        help="score the predictions against this Kaggle-style answer file (ImageId,Label), "
        "e.g. the test_labels.csv that 'mnist-onnx data' writes: accuracy and confusions, "
        "as for a CSV with a label column",
    )
    predict.add_argument(
        "--report",
        metavar="DIR",
        help="draw pictures into DIR: for images, contact_sheet.png (each input, what the model "
        "saw, label and confidence); for a labelled CSV (a label column or --labels), "
        "confusion_matrix.png and misclassified.png, the misread digits with their true and "
        "predicted labels and the model's confidence (needs: pip install 'mnist-onnx[plot]')",
    )
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        metavar="N",
        default=None,
        help=f"images per onnxruntime call (default: {DEFAULT_BATCH_SIZE} on the CPU, "
        f"{DEFAULT_CUDA_BATCH_SIZE} on CUDA, {DEFAULT_OPENVINO_BATCH_SIZE} on OpenVINO)",
    )
    predict.add_argument(
        "--provider",
        choices=("auto", "cpu", "cuda", "openvino"),
        default="auto",
        help="execution provider; auto = CUDA when onnxruntime-gpu sees a GPU, else the faster "
        "of onnxruntime's CPU provider and OpenVINO (when the 'openvino' extra is installed), "
        "measured once per machine, model and batch size ('mnist-onnx tune' measures again) "
        "(default: auto)",
    )
    predict.add_argument(
        "--threads",
        type=_positive_int,
        metavar="N",
        help="onnxruntime intra-op threads (default: one per physical core)",
    )
    predict.add_argument(
        "--precision",
        choices=(*PRECISIONS, "bf16"),
        help="which bundled model (default: fp32); with --model, checked against its metadata; "
        "bf16 = the fp32 model with bf16 compute on OpenVINO (CPUs with AMX or AVX-512 BF16), "
        "behind a gate: labels agree with fp32 on >= 99.8%% of held-out digits and accuracy "
        "drops <= 0.1 points",
    )
    predict.add_argument(
        "--proba",
        action="store_true",
        help="add p0..p9 and confidence columns to --out (then it is no Kaggle submission)",
    )
    predict.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        help="print nothing but errors and warnings (a CSV needs --out then: without it, nothing "
        "would be shown or saved)",
    )
    add_contract_options(predict)
    images = predict.add_argument_group("images", "options for image inputs (--invert also applies to CSVs)")
    images.add_argument(
        "--invert",
        choices=("auto", "yes", "no"),
        default=None,
        help="yes: digits are dark on light (inverted to MNIST's light on black); no: they are "
        "light on dark already; auto: decide from each image file's background "
        "(default: auto for images, no for CSVs, which take only yes or no)",
    )
    images.add_argument(
        "--no-preprocess",
        action="store_true",
        help="only greyscale, invert and resize to 28x28 (for images already like MNIST's)",
    )
    images.add_argument("--recursive", "-r", action="store_true", help="look for images in subfolders too")
    images.add_argument("--save-prepared", metavar="DIR", help="write the 28x28 image the model saw for each input")
    ray = predict.add_argument_group(
        "Ray engine", "score many or large CSVs on a pool of Ray workers (needs: pip install 'mnist-onnx[ray]')"
    )
    ray.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: this process (default); ray: a Ray Data pipeline, on a local Ray or a cluster",
    )
    ray.add_argument(
        "--address",
        metavar="ADDRESS",
        help="join this Ray cluster (e.g. auto, HOST:6379, ray://HOST:10001); default: start a local Ray",
    )
    ray.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="Ray actors, one onnxruntime session each (default: one per GPU share with "
        "--gpus-per-worker, else one per CPU but one)",
    )
    ray.add_argument(
        "--gpus-per-worker",
        type=_positive_float,
        metavar="G",
        default=0.0,
        help="GPUs each Ray actor asks for (0.5 shares a GPU between two; default: 0, CPU inference)",
    )
    ray.add_argument(
        "--out-dir", metavar="DIR", help="write each input file's predictions to DIR/NAME.predictions.csv (Ray engine)"
    )
    predict.set_defaults(handler=run_predict, usage_error=predict.error)
    register_inspect(sub)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value:g}")
    return value


def run_predict(args: argparse.Namespace) -> int:
    """Run ``mnist-onnx predict`` with the engine ``args.engine`` asks for."""
    if args.engine == "ray":
        return _run_on_ray(args)
    return _run_locally(args)


def _run_locally(args: argparse.Namespace) -> int:
    """Score one CSV (default: the bundled sample) with :class:`~.predictor.DigitClassifier`; print a summary."""
    import onnxruntime as ort

    from . import _predict_io as io
    from .predictor import DigitClassifier

    csvs, images = _local_inputs(args)
    csv_arg = csvs[0] if csvs else None
    csv_path = Path(csv_arg) if csv_arg is not None else SAMPLE  # "" is a path error, not "no CSV"
    to_stdout = args.out == io.STDOUT
    if images:
        if args.labels:
            raise MnistOnnxError("--labels scores a Kaggle CSV against its ImageId,Label answers, not images")
        io.refuse_output_over_input(args.out, images)
        args.out = None if to_stdout else args.out  # images without --out are printed
        checks = io.Checked(answers=None)
    else:
        if args.quiet and not args.out:
            # Exits with status 2 and the usage line, like any other misuse of the options.
            args.usage_error(
                "--quiet without --out would predict the CSV and show nothing: add --out PATH "
                "(or --out - to print the predictions)"
            )
        checks = io.check_before_reading(csv_path, out=args.out, labels=args.labels, report=args.report)
    emit = status_printer(args.quiet, stream=sys.stderr if to_stdout else sys.stdout)
    # onnxruntime-gpu 1.31 logs "No registered plugin EP device found for 'CUDAExecutionProvider'"
    # through its default logger on every CUDA session (seen on an H100) while CUDA works; the
    # providers really in use are checked and reported below instead.
    ort.set_default_logger_severity(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        classifier = DigitClassifier(
            args.model,
            providers=args.provider,
            threads=args.threads,
            precision=args.precision,
            batch_size=args.batch_size,
            pixel_scale=args.pixel_scale,
            normalize=args.normalize,
            output=args.output,
        )
    # Printed even with --quiet: a warning here means the predictions are probably wrong.  Once each: the
    # provider trial of --provider auto loads the model again, and the load-time check warns again there.
    for message in dict.fromkeys(str(warning.message) for warning in caught):
        print(f"mnist-onnx predict: warning: {message}", file=sys.stderr)
    if images:
        from .image_cli import run_images

        return run_images(args, images, classifier, emit)
    # With --out - or --labels the file is written after the run (the answers must match the rows first).
    write_after = to_stdout or checks.answers is not None
    progress = None if args.quiet else io.ProgressBar(sys.stderr, io.progress_total(csv_path, sys.stderr))
    try:
        frame = classifier.predict_csv(
            csv_path,
            output=None if write_after else args.out,
            proba=args.proba,
            progress=progress,
            invert=args.invert == "yes",
        )
    finally:
        if progress is not None:
            progress.close()
    drawn = io.finish(
        frame,
        classifier,
        checks,
        csv_path,
        out=args.out,
        write_after=write_after,
        report=args.report,
        bundled=args.model is None,
        quiet=args.quiet,
    )
    _report_findings(frame, classifier.warnings, emit)
    if emit:
        for line in summary_lines(frame, csv_path, args.out, sample=csv_arg is None):
            emit(line)
        if drawn:
            emit(f"wrote {', '.join(str(path) for path in drawn)}")
        if not args.out:
            emit(io.not_saved_line())
    return 0


def _report_findings(frame: pd.DataFrame, shown: list[str], emit: Callable[[str], None] | None) -> None:
    """Notes on how the file was read (stdout, unless quiet), and warnings not shown yet (stderr, always)."""
    if emit:
        for note in frame.attrs.get("notes", []):
            emit(f"note: {note}")
    for message in frame.attrs.get("warnings", []):
        if message not in shown:
            print(f"mnist-onnx predict: warning: {message}", file=sys.stderr)


def _local_inputs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The local engine's inputs, sorted into (CSVs, images); refuses what does not go together."""
    from .image_cli import sort_inputs

    ray_only = [
        flag
        for flag, value in (
            ("--address", args.address),
            ("--workers", args.workers),
            ("--gpus-per-worker", args.gpus_per_worker),
            ("--out-dir", args.out_dir),
        )
        if value
    ]
    csvs, images = sort_inputs(args.csv, recursive=args.recursive) if args.csv else ([], [])
    if csvs and images:
        raise MnistOnnxError(f"got both CSVs ({csvs[0]}) and images ({images[0]}): predict them in separate runs")
    if ray_only or len(csvs) > 1:
        what = f"{ray_only[0]} is" if ray_only else "several CSVs are"
        raise MnistOnnxError(f"{what} for the Ray engine: add --engine ray")
    image_only = [
        flag
        for flag, value in (("--no-preprocess", args.no_preprocess), ("--save-prepared", args.save_prepared))
        if value
    ]
    if image_only and not images:
        raise MnistOnnxError(f"{image_only[0]} is for image inputs")
    if args.invert == "auto" and not images:
        raise MnistOnnxError(
            "--invert auto decides per image file; for a CSV pass --invert yes (digits dark on light) or --invert no"
        )
    if args.proba and not args.out and not images:
        raise MnistOnnxError("--proba adds columns to the --out file: give --out PATH too")
    return csvs, images


def _run_on_ray(args: argparse.Namespace) -> int:
    """Score ``args.csv`` (paths and globs) with :func:`~.ray_engine.predict_csv_files`; print a summary."""
    from .ray_engine import predict_csv_files

    if args.quiet and not (args.out or args.out_dir):
        args.usage_error("--quiet without --out or --out-dir would predict and show nothing: add --out PATH")
    if args.proba and not (args.out or args.out_dir):
        raise MnistOnnxError("--proba adds columns to the output files: give --out PATH or --out-dir DIR too")
    _refuse_local_only_options(args)
    from ._predict_io import refuse_output_over_input

    inputs = args.csv or [str(SAMPLE)]
    refuse_output_over_input(args.out, [match for pattern in inputs for match in glob.glob(pattern) or [pattern]])
    quiet = args.quiet
    _configure_ray_data(quiet=quiet)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        frame = predict_csv_files(
            inputs,
            args.model,
            output=args.out,
            output_dir=args.out_dir,
            proba=args.proba,
            providers=args.provider,
            threads=args.threads,
            precision=args.precision,
            batch_size=args.batch_size,
            workers=args.workers,
            gpus_per_worker=args.gpus_per_worker,
            address=args.address,
            ray_init_options={"logging_level": logging.ERROR if quiet else logging.WARNING, "log_to_driver": not quiet},
            pixel_scale=args.pixel_scale,
            normalize=args.normalize,
            output_name=args.output,
        )
    ours = (ContractWarning, ProviderFallbackWarning)  # not Ray's own; printed even with --quiet, once each
    for message in dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, ours)):
        print(f"mnist-onnx predict: warning: {message}", file=sys.stderr)
    emit = status_printer(quiet, stream=sys.stdout)
    if emit:
        files = frame.attrs["files"]
        source = Path(files[0][0]) if len(files) == 1 else Path(f"{len(files)} files")
        for line in summary_lines(frame, source, args.out, sample=not args.csv):
            emit(line)
        if args.out_dir:
            emit(f"wrote {len(files)} per-file outputs to {args.out_dir} (NAME.predictions.csv)")
    return 0


def _refuse_local_only_options(args: argparse.Namespace) -> None:
    """Refuse, before Ray starts (seconds), what only the local engine does: images, stdout, answers, pictures."""
    for flag, value in (("--out -", args.out == "-"), ("--labels", args.labels), ("--report", args.report)):
        if value:
            raise MnistOnnxError(f"{flag} is for the local engine: drop --engine ray, or score the written files")
    if args.invert in ("yes", "auto"):
        raise MnistOnnxError(
            f"--invert {args.invert} is for the local engine: drop --engine ray, or invert the "
            "pixels (255 - p) in the files"
        )
    image_only = [
        flag
        for flag, value in (("--no-preprocess", args.no_preprocess), ("--save-prepared", args.save_prepared))
        if value
    ]
    if image_only:
        raise MnistOnnxError(f"{image_only[0]} is for image inputs, which the local engine predicts: drop --engine ray")
    from .image_files import is_image_file

    for path in args.csv or []:  # before Ray starts (seconds), not as a failed file after the run
        if is_image_file(path):
            raise MnistOnnxError(
                f"{path}: is an image; the Ray engine reads Kaggle CSVs, images are predicted by "
                "the local engine: drop --engine ray"
            )


def _configure_ray_data(*, quiet: bool) -> None:
    from .._extras import require

    require("ray.data", "ray")  # configures its loggers on import, so set the level after
    from ray.data import DataContext

    # Ray Data logs every stage at INFO; the summary says what happened.  Its
    # progress bars stay on a terminal (off a terminal they are INFO lines).
    logging.getLogger("ray.data").setLevel(logging.ERROR if quiet else logging.WARNING)
    DataContext.get_current().enable_progress_bars = not quiet


def summary_lines(frame: pd.DataFrame, csv_path: Path, out: str | None, *, sample: bool) -> list[str]:
    """What ``mnist-onnx predict`` says after a run: rows, model, provider, throughput, accuracy."""
    attrs = frame.attrs
    source = "the bundled sample" if sample else str(csv_path)
    lines = [
        f"predicted {attrs['rows']:,} rows of {source} with {attrs['model']} on "
        f"{attrs.get('provider') or attrs['providers'][0]}: "
        f"{attrs['images_per_second']:,.0f} images/s ({attrs['seconds']:.2f} s, reading included)"
    ]
    evaluation = attrs.get("evaluation")
    if evaluation is not None:
        line = (
            f"accuracy {evaluation.accuracy:.2%} ({evaluation.correct:,} of {evaluation.rows:,} "
            f"match the file's label column)"
        )
        mistakes = _top_confusions(evaluation)
        if mistakes:
            line += f"; most confused (true->predicted): {mistakes}"
        lines.append(line)
    if out:
        where = "the predictions to standard output" if out == "-" else out
        lines.append(
            f"wrote {where} ({', '.join(frame.columns[:2])}"
            f"{', ...' if len(frame.columns) > 2 else ''}; {attrs['rows']:,} rows)"
        )
    return lines


def _top_confusions(evaluation: Evaluation, most: int = 3) -> str:
    pairs = []
    for t, row in enumerate(evaluation.confusion):
        for p, count in enumerate(row):
            if t != p and count:
                pairs.append((int(count), evaluation.labels[t], evaluation.labels[p]))
    pairs.sort(key=lambda item: (-item[0], str(item[1]), str(item[2])))
    return ", ".join(f"{t}->{p} ({count})" for count, t, p in pairs[:most])
