"""onnxruntime's CPU provider against its OpenVINO plugin provider, and OpenVINO's own levers, in one run.

Every contender runs the same held-out digits; contenders are interleaved
(shuffled order each round, a pause before each block so the previous one's
spinning threads are idle) and the figures are medians over rounds, with each
contender's ratio to a baseline taken round by round (paired), so drift on a
shared machine hits all alike.  Parity is max |p - CPU provider| on every digit
of the evaluation file for the same model, and whether the labels are identical.

Usage::

    python benchmarks/openvino_levers.py --fp32 digit_cnn.onnx --int8 digit_cnn.int8.onnx \\
        --csv test.csv [--litert-fp32 model.tflite --litert-int8 model.int8.tflite] \\
        [--set main|levers|all] [--batch-sizes 16,64,512] [--rounds 5] [--out results.json]

Needs ``onnxruntime-ep-openvino`` (``pip install 'mnist-onnx[openvino]'``); LiteRT
contenders need ``ai-edge-litert``.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mnist_onnx.runtime.tuning import images_per_second

OV = "OpenVINOExecutionProvider"
LITERT_THREADS = 2


@dataclass
class Spec:
    """One way to run a model: provider, its options, and how many threads call it at once."""

    name: str
    precision: str  # fp32 | int8 (which model)
    provider: str  # cpu | openvino | litert
    ov_config: dict[str, str] = field(default_factory=dict)
    callers: int = 1
    cpu_threads: int = 0


def _register_openvino() -> Any:
    import onnxruntime_ep_openvino as plugin

    ort.register_execution_provider_library("openvino_bench", plugin.get_library_path())
    devices = [d for d in ort.get_ep_devices() if d.ep_name == OV and d.ep_metadata.get("ov_device") == "CPU"]
    if not devices:
        raise SystemExit("the OpenVINO plugin registered but offers no CPU device")
    return devices[0]


def _session(model: Path, spec: Spec, device: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = spec.cpu_threads
    if spec.provider == "openvino":
        config = {"load_config": json.dumps({"CPU": spec.ov_config})} if spec.ov_config else {}
        options.add_provider_for_devices([device], config)
        session = ort.InferenceSession(str(model), options)
        if session.get_providers()[0] != OV:
            raise SystemExit(f"{spec.name}: OpenVINO did not take the session ({session.get_providers()})")
        return session
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def _runner(spec: Spec, models: dict[str, Path], device: Any) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images (N, 28, 28) -> probabilities (N, 10); the float scaling is timed for fp32 models."""
    if spec.provider == "litert":
        from ai_edge_litert.interpreter import Interpreter

        cache: dict[int, tuple[Any, int, int]] = {}

        def run_litert(images: np.ndarray) -> np.ndarray:
            n = len(images)
            if n not in cache:
                it = Interpreter(model_path=str(models[f"litert-{spec.precision}"]), num_threads=LITERT_THREADS)
                i = it.get_input_details()[0]["index"]
                it.resize_tensor_input(i, [n, 28, 28, 1])
                it.allocate_tensors()
                cache[n] = (it, i, it.get_output_details()[0]["index"])
            it, i, o = cache[n]
            it.set_tensor(i, (images.astype(np.float32) * np.float32(1 / 255)).reshape(n, 28, 28, 1))
            it.invoke()
            return it.get_tensor(o).copy()

        return run_litert
    session = _session(models[spec.precision], spec, device)
    name = session.get_inputs()[0].name
    wants_float = session.get_inputs()[0].type == "tensor(float)"

    def run_one(images: np.ndarray) -> np.ndarray:
        x = images.reshape(len(images), 1, 28, 28)
        if wants_float:
            x = x.astype(np.float32) * np.float32(1 / 255)
        return session.run(None, {name: x})[0]

    if spec.callers == 1:
        return run_one
    pool = ThreadPoolExecutor(spec.callers)

    def run_split(images: np.ndarray) -> np.ndarray:
        parts = np.array_split(images, spec.callers)
        return np.concatenate(list(pool.map(run_one, parts)))

    return run_split


def main_specs() -> list[Spec]:
    f32 = {"INFERENCE_PRECISION_HINT": "f32"}
    return [
        Spec("cpu-fp32", "fp32", "cpu"),
        Spec("cpu-int8", "int8", "cpu"),
        Spec("ov-fp32-f32", "fp32", "openvino", f32),
        Spec("ov-fp32-bf16", "fp32", "openvino", {"INFERENCE_PRECISION_HINT": "bf16"}),
        Spec("ov-int8-f32", "int8", "openvino", f32),
        Spec("ov-int8-default", "int8", "openvino", {}),
        Spec("litert-fp32", "fp32", "litert"),
        Spec("litert-int8", "int8", "litert"),
    ]


def lever_specs() -> list[Spec]:
    specs = [Spec("cpu-int8", "int8", "cpu"), Spec("cpu-int8-1thr-2callers", "int8", "cpu", callers=2, cpu_threads=1)]
    for precision, hint in (("int8", "f32"), ("fp32", "bf16")):
        base = {"INFERENCE_PRECISION_HINT": hint}
        tag = f"ov-{precision}-{hint}"
        specs += [
            Spec(f"{tag}", precision, "openvino", base),
            Spec(f"{tag}-latency", precision, "openvino", {**base, "PERFORMANCE_HINT": "LATENCY"}),
            Spec(f"{tag}-throughput", precision, "openvino", {**base, "PERFORMANCE_HINT": "THROUGHPUT"}),
            Spec(
                f"{tag}-throughput-2callers",
                precision,
                "openvino",
                {**base, "PERFORMANCE_HINT": "THROUGHPUT"},
                callers=2,
            ),
            Spec(f"{tag}-streams2-2callers", precision, "openvino", {**base, "NUM_STREAMS": "2"}, callers=2),
            Spec(f"{tag}-threads1", precision, "openvino", {**base, "INFERENCE_NUM_THREADS": "1"}),
            Spec(f"{tag}-threads2", precision, "openvino", {**base, "INFERENCE_NUM_THREADS": "2"}),
        ]
    return specs


def _batches(images: np.ndarray, batch: int) -> list[np.ndarray]:
    usable = len(images) - len(images) % batch if len(images) >= batch else 0
    if usable == 0:
        return [np.resize(images, (batch, *images.shape[1:]))]
    return [np.ascontiguousarray(images[i : i + batch]) for i in range(0, usable, batch)]


def time_all(
    runners: dict[str, Callable[[np.ndarray], np.ndarray]],
    images: np.ndarray,
    batch: int,
    rounds: int,
    block_seconds: float,
    seed: int,
) -> dict[str, list[float]]:
    """Images/s of each runner per round, blocks of at least ``block_seconds`` in a shuffled order."""
    batches = _batches(images, batch)
    for run in runners.values():
        for x in batches[:2]:
            run(x)
    rng = random.Random(seed)
    order = list(runners)
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            run = runners[name]
            time.sleep(0.05)
            run(batches[0])
            speeds[name].append(images_per_second(run, batches, seconds=block_seconds, min_calls=3))
    return speeds


def parity(
    runners: dict[str, Callable[[np.ndarray], np.ndarray]],
    specs: dict[str, Spec],
    images: np.ndarray,
    labels: np.ndarray | None,
) -> dict[str, dict[str, Any]]:
    probs = {}
    for name, run in runners.items():
        probs[name] = np.concatenate([run(images[i : i + 512]) for i in range(0, len(images), 512)])
    out: dict[str, dict[str, Any]] = {}
    for name, p in probs.items():
        ref = probs.get(f"cpu-{specs[name].precision}")
        entry: dict[str, Any] = {}
        if ref is not None:
            entry["max_abs_diff_vs_cpu"] = float(np.abs(p - ref).max())
            entry["labels_differ_vs_cpu"] = int((p.argmax(1) != ref.argmax(1)).sum())
        if labels is not None:
            entry["accuracy"] = float((p.argmax(1) == labels).mean())
        out[name] = entry
    return out


def _read_images(csv: Path, labels_csv: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    import pandas as pd

    frame = pd.read_csv(csv)
    labels = frame.pop("label").to_numpy() if "label" in frame.columns else None
    if labels is None and labels_csv is not None:
        labels = pd.read_csv(labels_csv)["Label"].to_numpy()
    return frame.to_numpy(np.uint8).reshape(-1, 28, 28), labels


def _cpu_facts() -> dict[str, Any]:
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    flags = next((line.split(":", 1)[1].split() for line in open("/proc/cpuinfo") if line.startswith("flags")), [])
    wanted = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
    load = open("/proc/loadavg").read().split()[:3]
    return {"model": model, "features": {f: f in flags for f in wanted}, "load_average_at_start": load}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fp32", type=Path, required=True)
    parser.add_argument("--int8", type=Path, required=True)
    parser.add_argument("--csv", type=Path, required=True, help="held-out digits (train format, or test.csv)")
    parser.add_argument("--labels", type=Path, help="answers for a test.csv (ImageId,Label)")
    parser.add_argument("--litert-fp32", type=Path)
    parser.add_argument("--litert-int8", type=Path)
    parser.add_argument("--set", choices=("main", "levers", "all"), default="main")
    parser.add_argument("--only", help="comma-separated contender names to keep")
    parser.add_argument("--batch-sizes", default="16,64,512")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=0.3)
    parser.add_argument("--timing-rows", type=int, default=4096, help="images cycled through while timing")
    parser.add_argument("--baseline", default="cpu-int8")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads of every contender (0: each runtime's default, LiteRT 2); 1 measures one core",
    )
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    images, labels = _read_images(args.csv, args.labels)
    device = _register_openvino()
    from importlib.metadata import version

    import onnxruntime_ep_openvino  # noqa: F401 - for its version below

    specs = {"main": main_specs(), "levers": lever_specs(), "all": main_specs() + lever_specs()}[args.set]
    models = {"fp32": args.fp32, "int8": args.int8}
    if args.litert_fp32:
        models["litert-fp32"] = args.litert_fp32
    if args.litert_int8:
        models["litert-int8"] = args.litert_int8
    keep = set(args.only.split(",")) if args.only else None
    chosen: dict[str, Spec] = {}
    for s in specs:
        if s.provider == "litert" and f"litert-{s.precision}" not in models:
            continue
        if keep is None or s.name in keep:
            chosen.setdefault(s.name, s)
    if args.threads:
        for s in chosen.values():
            s.cpu_threads = args.threads
            if s.provider == "openvino":
                s.ov_config = {**s.ov_config, "INFERENCE_NUM_THREADS": str(args.threads)}
    global LITERT_THREADS
    LITERT_THREADS = args.threads or 2
    runners = {name: _runner(s, models, device) for name, s in chosen.items()}
    facts = {
        "cpu": _cpu_facts(),
        "onnxruntime": ort.__version__,
        "onnxruntime-ep-openvino": version("onnxruntime-ep-openvino"),
        "command": " ".join(sys.argv),
        "rows": len(images),
        "contenders": {n: s.__dict__ for n, s in chosen.items()},
    }
    print(json.dumps(facts["cpu"]), flush=True)
    results: dict[str, Any] = {"facts": facts, "parity": parity(runners, chosen, images, labels), "speed": {}}
    for name, entry in results["parity"].items():
        print(f"parity {name:32s} {json.dumps(entry)}", flush=True)
    timing_images = images[: args.timing_rows]
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        speeds = time_all(runners, timing_images, batch, args.rounds, args.block_seconds, seed=batch)
        base = speeds.get(args.baseline)
        cell = {}
        for name, v in speeds.items():
            ratio = float(np.median(np.asarray(v) / np.asarray(base))) if base else None
            cell[name] = {
                "median_ips": float(np.median(v)),
                "best_ips": float(max(v)),
                "per_round": v,
                f"ratio_vs_{args.baseline}": ratio,
            }
            print(
                f"batch {batch:4d} {name:32s} median {np.median(v):9,.0f} best {max(v):9,.0f} img/s"
                + (f"  x{ratio:.2f} vs {args.baseline}" if ratio else ""),
                flush=True,
            )
        results["speed"][str(batch)] = cell
    results["facts"]["load_average_at_end"] = open("/proc/loadavg").read().split()[:3]
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
