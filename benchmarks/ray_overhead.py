"""Ray's overhead against single-process predict_csv: 10 copies of test.csv as 10 files.

    python benchmarks/ray_overhead.py TEST_CSV [--copies 10] [--rounds 1]
        [--workers 1 --workers 2] [--precision fp32]

Builds COPIES files (each a copy of the given test.csv) in a temporary folder,
then, in a fresh subprocess each time (so start-up and peak memory are each
run's own), and interleaved over ROUNDS:

* single: one DigitClassifier, ``predict_csv`` on each file in turn (what a
  loop over the files costs without Ray);
* ray-N: ``predict_csv_files`` on all files with N workers, on a local Ray
  started by the call with ``num_cpus`` = this machine's CPUs; the time
  includes starting and stopping Ray, as ``mnist-onnx predict --engine ray`` pays it.

It prints, per run, seconds, images/s, the ratio to the best single-process
throughput, and peak RSS: of the process for single, and of each Ray worker
process (actors and read-task workers, sampled every 0.1 s with psutil) for
ray-N.  RSS counts the object-store pages a worker has touched (shared with
the other workers), so it overstates what each worker owns.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_single(files: list[Path], precision: str) -> dict:
    from mnist_onnx.runtime.predictor import DigitClassifier

    started = time.perf_counter()
    classifier = DigitClassifier(providers="cpu", precision=precision)
    rows = sum(len(classifier.predict_csv(path)) for path in files)
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_ray(files: list[Path], precision: str, workers: int) -> dict:
    import logging

    import psutil

    from mnist_onnx.runtime.ray_engine import predict_csv_files

    peaks: dict[int, tuple[str, int]] = {}
    stop = threading.Event()

    def sample() -> None:
        me = psutil.Process()
        while not stop.is_set():
            for proc in psutil.process_iter(["pid", "cmdline", "memory_info"]):
                cmd = (proc.info["cmdline"] or [""])[0]
                if not cmd.startswith("ray::") or proc.pid == me.pid or proc.info["memory_info"] is None:
                    continue
                rss = proc.info["memory_info"].rss
                name, peak = peaks.get(proc.pid, (cmd, 0))
                if "IDLE" in name or "IDLE" not in cmd:
                    name = cmd  # keep the most telling title the process had
                peaks[proc.pid] = (name, max(peak, rss))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    frame = predict_csv_files(
        [str(p) for p in files],
        providers="cpu",
        precision=precision,
        workers=workers,
        ray_init_options={"num_cpus": os.cpu_count(), "logging_level": logging.ERROR, "log_to_driver": False},
    )
    seconds = time.perf_counter() - started
    stop.set()
    sampler.join()
    plan = frame.attrs["plan"]
    # The pipeline's own workers: the actors and the read tasks' workers (Ray's
    # service processes, e.g. its dashboard agent, are left out).
    workers_rss = sorted(
        (
            (name.split(" ")[0], peak / 2**20)
            for name, peak in peaks.values()
            if "DigitBatchPredictor" in name or "_read_files" in name
        ),
        key=lambda item: item[0],
    )
    return {
        "rows": len(frame),
        "seconds": seconds,
        "plan": str(plan),
        "driver_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "workers_peak_rss_mib": workers_rss,
    }


def child(argv: list[str]) -> None:
    mode, precision, *files = argv
    paths = [Path(f) for f in files]
    if mode == "single":
        result = run_single(paths, precision)
    else:
        result = run_ray(paths, precision, int(mode.split("-")[1]))
    print("RESULT " + json.dumps(result))


def _short(title: str) -> str:
    return "actor" if "DigitBatchPredictor" in title else "reader"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("test_csv", type=Path)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, action="append")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    args = parser.parse_args()
    modes = ["single"] + [f"ray-{w}" for w in (args.workers or [2])]
    folder = Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    try:
        files = []
        for i in range(args.copies):
            files.append(folder / f"test-{i:02d}.csv")
            shutil.copyfile(args.test_csv, files[-1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        results: dict[str, list[dict]] = {m: [] for m in modes}
        for round_ in range(args.rounds):
            for mode in modes:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", mode, args.precision, *map(str, files)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=REPO,
                    check=True,
                ).stdout
                result = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
                results[mode].append(result)
                print(f"round {round_ + 1} {mode}: {json.dumps(result)}", flush=True)
        best_single = max(r["rows"] / r["seconds"] for r in results["single"])
        print(f"\n{args.copies} files × {args.test_csv.name}, {args.precision}, {os.cpu_count()} CPUs")
        print(f"{'mode':<8} {'rows':>8} {'best s':>7} {'images/s':>9} {'vs single':>9}  peak RSS MiB")
        for mode in modes:
            best = min(results[mode], key=lambda r: r["seconds"])
            rate = best["rows"] / best["seconds"]
            if mode == "single":
                memory = f"process {best['peak_rss_mib']:.0f}"
            else:
                memory = f"driver {best['driver_peak_rss_mib']:.0f}; " + ", ".join(
                    f"{_short(name)} {mib:.0f}" for name, mib in best["workers_peak_rss_mib"]
                )
            print(
                f"{mode:<8} {best['rows']:>8,} {best['seconds']:>7.1f} {rate:>9,.0f} {rate / best_single:>9.2f}  "
                f"{memory}"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
