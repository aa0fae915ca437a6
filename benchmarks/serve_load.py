"""Load test: ``mnist-onnx serve`` against KServe's model server, a naive handler, and in-process prediction.

Usage:
    python benchmarks/serve_load.py --kserve-python KSERVE_VENV/bin/python [--precision fp32]
        [--concurrency 1 8 32 128] [--seconds 3] [--rounds 2] [--out-dir DIR]

Workloads (Open Inference Protocol requests to ``/v2/models/digits/infer``):

* ``json-1``: one image as a JSON tensor (784 integers), JSON answer;
* ``binary-1``: one image as Triton binary tensor data, binary answer;
* ``binary-1024``: 1,024 images as binary tensor data, binary answer.

Contenders, all serving the same ONNX model on 127.0.0.1, one process each:

* ``mnist-onnx``: ``mnist-onnx serve`` with its defaults (adaptive batching);
* ``mnist-onnx h11``: the same with ``--http h11 --loop asyncio`` (uvicorn
  without its ``[standard]`` extras), to decide whether the extra pays;
* ``kserve``: KServe's Python model server (``kserve`` package) with an
  onnxruntime model (``serve_kserve_model.py``), run by ``--kserve-python``;
* ``naive``: a Starlette handler that predicts each request on its own
  (``serve_naive.py``), same parsing and encoding as ``mnist-onnx serve``;
* ``in-process``: ``DigitClassifier.predict`` called in a loop, one request's
  images at a time, no HTTP: the ceiling.

The client is a lean asyncio HTTP/1.1 client (keep-alive connections, one per
unit of concurrency, requests prebuilt as bytes) running in this process, on
the same machine as the servers: it takes CPU from them, as a sidecar or a
co-located client would.  Every cell runs ``--seconds`` (``--seconds-large`` for 1,024-image requests) after a warm-up;
requests still unanswered 20 s after that are abandoned and counted as errors,
and before the next cell a one-image request must be answered, so a server
still busy with abandoned work does not slow the next contender.  Cells with
more than ``--max-images-in-flight`` images in flight at once are skipped (by
default 1,024-image requests stop at concurrency 32: 128 x 1,024 images take
minutes to drain on two cores).  Contenders are interleaved
cell by cell, round after round; the tables report
the best round (least disturbed by other work on the machine) and the median.
All loops are bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORKLOADS = ("json-1", "binary-1", "binary-1024")
GRACE_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample_images(n: int) -> np.ndarray:
    import gzip
    import io

    raw = gzip.decompress((REPO / "mnist_onnx" / "runtime" / "bundled" / "sample.csv.gz").read_bytes()).decode()
    rows = np.loadtxt(io.StringIO(raw), delimiter=",", skiprows=1, dtype=np.int64, ndmin=2)
    pixels = rows[:, 1:].astype(np.uint8).reshape(-1, 28, 28)
    return np.resize(pixels, (n, 28, 28))


def request_bytes(workload: str, images: np.ndarray) -> bytes:
    """The whole HTTP request for ``workload``, ready to write on a keep-alive connection."""
    n = 1024 if workload == "binary-1024" else 1
    batch = images[:n]
    headers = {"Host": "127.0.0.1"}
    if workload == "json-1":
        body = json.dumps(
            {
                "inputs": [
                    {"name": "image", "datatype": "UINT8", "shape": [1, 28, 28], "data": batch.reshape(-1).tolist()}
                ],
                "parameters": {"binary_data_output": False},
            }
        ).encode()
        headers["Content-Type"] = "application/json"
    else:
        data = batch.tobytes()
        header = json.dumps(
            {
                "inputs": [
                    {
                        "name": "image",
                        "datatype": "UINT8",
                        "shape": list(batch.shape),
                        "parameters": {"binary_data_size": len(data)},
                    }
                ],
                "parameters": {"binary_data_output": True},
            }
        ).encode()
        body = header + data
        headers["Content-Type"] = "application/octet-stream"
        headers["Inference-Header-Content-Length"] = str(len(header))
    headers["Content-Length"] = str(len(body))
    head = "POST /v2/models/digits/infer HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def _connection(port: int, payload: bytes, until: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            started = time.perf_counter()
            writer.write(payload)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")  # not inference-header-content-length
            if at >= 0:
                await reader.readexactly(int(lower[at + 17 : lower.find(b"\r\n", at + 2)]))
            elif b"transfer-encoding: chunked" in lower:  # KServe streams binary answers in chunks
                while True:
                    size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            if status == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors.append(status)
            if time.perf_counter() >= until:
                break
    finally:
        writer.close()


async def _drive(port: int, payload: bytes, concurrency: int, seconds: float) -> tuple[list[float], list[int], float]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    tasks = [asyncio.ensure_future(_connection(port, payload, until, latencies, errors)) for _ in range(concurrency)]
    # Requests still unanswered GRACE_S after the cell's end are abandoned (counted as errors, status 0).
    done, pending = await asyncio.wait(tasks, timeout=seconds + GRACE_S)
    for task in pending:
        task.cancel()
        errors.append(0)
    for task in done:
        if task.exception() is not None:
            errors.append(0)
    return latencies, errors, time.perf_counter() - started


def measure_http(port: int, payload: bytes, concurrency: int, seconds: float, warmup: float, probe: bytes) -> dict:
    runner = _event_loop_runner()
    runner(_drive(port, payload, concurrency, warmup))
    latencies, errors, elapsed = runner(_drive(port, payload, concurrency, seconds))
    runner(_drain(port, probe))
    return _summary(latencies, elapsed, len(errors))


async def _drain(port: int, probe: bytes, limit_s: float = 300.0) -> None:
    """Wait until the server answers a one-image request: requests abandoned by the cell are done by then.

    A server that keeps computing abandoned requests would otherwise slow down the next contender's cell.
    """
    latencies: list[float] = []
    errors: list[int] = []
    await asyncio.wait_for(_connection(port, probe, time.perf_counter() + 1e-9, latencies, errors), limit_s)


def measure_in_process(classifier, batch: np.ndarray, seconds: float, warmup: float) -> dict:
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        classifier.predict(batch)
    latencies = []
    started = time.perf_counter()
    end = started + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        classifier.predict(batch)
        latencies.append(time.perf_counter() - t0)
    return _summary(latencies, time.perf_counter() - started, 0)


def _summary(latencies: list[float], elapsed: float, errors: int) -> dict:
    if not latencies:
        return {"requests_per_s": 0.0, "p50_ms": None, "p99_ms": None, "errors": errors, "requests": 0}
    ordered = np.sort(np.asarray(latencies))
    return {
        "requests_per_s": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(ordered, 50) * 1e3),
        "p99_ms": float(np.percentile(ordered, 99) * 1e3),
        "errors": errors,
        "requests": len(latencies),
    }


def _event_loop_runner():
    try:
        import uvloop

        return lambda coro: uvloop.run(coro)
    except ImportError:
        return asyncio.run


def wait_ready(port: int, process: subprocess.Popen, name: str, limit_s: float = 240.0) -> None:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    process.kill()
    raise SystemExit(f"{name} was not ready in {limit_s:.0f} s")


def start_servers(args: argparse.Namespace, model_path: str) -> dict[str, tuple[subprocess.Popen, int]]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    commands = {}
    ours = [sys.executable, "-m", "mnist_onnx", "serve", "--precision", args.precision]
    commands["mnist-onnx"] = ours
    if not args.skip_h11:
        commands["mnist-onnx h11"] = [*ours, "--http", "h11", "--loop", "asyncio"]
    for variant in args.variant:
        name, _, flags = variant.partition("=")
        commands[f"mnist-onnx {name}"] = [*ours, *flags.split()]
    if args.kserve_python and not args.skip_kserve:
        commands["kserve"] = [args.kserve_python, str(HERE / "serve_kserve_model.py"), model_path]
    commands["naive"] = [sys.executable, str(HERE / "serve_naive.py"), "--precision", args.precision]
    servers = {}
    for name, command in commands.items():
        port = free_port()
        process = subprocess.Popen(
            [*command, "--port", str(port)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        servers[name] = (process, port)
    for name, (process, port) in servers.items():
        wait_ready(port, process, name)
    return servers


def _rate(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def render(results: dict, machine: str, args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {machine}. Model: bundled {args.precision}. {args.rounds} round(s) of {args.seconds:g} s a "
        f"cell, contenders interleaved; best round (median round in brackets). The client shares the cores. "
        f"requests/s counts answers with status 200; errors counts the others (503, 504) and requests "
        f"abandoned unanswered.",
        "",
    ]
    for workload in WORKLOADS:
        lines += [
            f"### {workload}",
            "",
            "| contender | concurrency | requests/s | images/s | p50 ms | p99 ms | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        images = 1024 if workload == "binary-1024" else 1
        for (w, contender, concurrency), rounds in results.items():
            if w != workload:
                continue
            best = max(rounds, key=lambda r: r["requests_per_s"])
            median = statistics.median(r["requests_per_s"] for r in rounds)
            p50 = "-" if best["p50_ms"] is None else f"{best['p50_ms']:.2f}"
            p99 = "-" if best["p99_ms"] is None else f"{best['p99_ms']:.2f}"
            lines.append(
                f"| {contender} | {concurrency if contender != 'in-process' else '-'} | "
                f"{_rate(best['requests_per_s'])} ({_rate(median)}) | "
                f"{best['requests_per_s'] * images:,.0f} | "
                f"{p50} | {p99} | {sum(r['errors'] for r in rounds)} |"
            )
        lines.append("")
    return "\n".join(lines)


def chart(results: dict, path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(WORKLOADS), figsize=(15, 4.5))
    for ax, workload in zip(axes, WORKLOADS, strict=True):
        contenders = sorted({c for (w, c, _) in results if w == workload and c != "in-process"})
        levels = sorted({n for (w, c, n) in results if w == workload and c != "in-process"})
        width = 0.8 / max(1, len(contenders))
        for i, contender in enumerate(contenders):
            values = [max(r["requests_per_s"] for r in results[(workload, contender, n)]) for n in levels]
            ax.bar(np.arange(len(levels)) + i * width, values, width, label=contender)
        ceiling = results.get((workload, "in-process", 0))
        if ceiling:
            ax.axhline(
                max(r["requests_per_s"] for r in ceiling), color="black", linestyle="--", label="in-process ceiling"
            )
        ax.set_xticks(np.arange(len(levels)) + 0.4 - width / 2, [str(n) for n in levels])
        ax.set_xlabel("concurrent connections")
        ax.set_ylabel("requests/s")
        ax.set_title(workload)
        ax.legend(fontsize=8)
    fig.suptitle(f"Open Inference Protocol load test ({machine}; client on the same cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def machine_line() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kserve-python", help="the Python of an environment with kserve and onnxruntime")
    parser.add_argument("--precision", choices=("fp32", "int8"), default="fp32")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 128])
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds a cell (default: 3)")
    parser.add_argument(
        "--seconds-large",
        type=float,
        default=10.0,
        help="measured seconds a cell of 1,024-image requests (default: 10)",
    )
    parser.add_argument(
        "--max-images-in-flight",
        type=int,
        default=32768,
        help="skip cells whose concurrency x images per request exceeds this (default: 32768, "
        "so 1,024-image requests run at concurrency up to 32)",
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds a cell (default: 0.5)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-h11", action="store_true", help="leave out the h11/asyncio variant")
    parser.add_argument("--skip-kserve", action="store_true", help="leave out KServe even with --kserve-python")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="another mnist-onnx serve contender with these flags, e.g. 'spin-off=--spinning off'",
    )
    parser.add_argument("--out-dir", type=Path, help="write serve_load.json, .md and .png here")
    args = parser.parse_args()
    # SIGTERM (a timeout, a job scheduler) unwinds like Ctrl-C, so the servers started below are stopped.
    signal.signal(signal.SIGTERM, _interrupt)

    from mnist_onnx.runtime import DigitClassifier

    machine = machine_line()
    print(machine, flush=True)
    images = sample_images(1024)
    classifier = DigitClassifier(precision=args.precision)
    model_path = str(
        REPO
        / "mnist_onnx"
        / "runtime"
        / "bundled"
        / ("digit_cnn.onnx" if args.precision == "fp32" else "digit_cnn.int8.onnx")
    )
    probe = request_bytes("binary-1", images)
    servers = start_servers(args, model_path)
    results: dict[tuple[str, str, int], list[dict]] = {}
    try:
        for round_index in range(args.rounds):
            for workload in args.workloads:
                payload = request_bytes(workload, images)
                large = workload == "binary-1024"
                batch = images[:1024] if large else images[:1]
                seconds = args.seconds_large if large else args.seconds
                results.setdefault((workload, "in-process", 0), []).append(
                    measure_in_process(classifier, batch, seconds, args.warmup)
                )
                for concurrency in args.concurrency:
                    if concurrency * len(batch) > args.max_images_in_flight:
                        continue
                    names = list(servers)
                    shift = round_index % len(names)  # rotate who goes first, round by round
                    for name in names[shift:] + names[:shift]:
                        cell = measure_http(servers[name][1], payload, concurrency, seconds, args.warmup, probe)
                        results.setdefault((workload, name, concurrency), []).append(cell)
                        print(
                            f"round {round_index + 1} {workload:12s} c={concurrency:<4d} {name:15s} "
                            f"{cell['requests_per_s']:9,.0f} req/s  p50 {cell['p50_ms'] or 0:8.2f} ms  "
                            f"p99 {cell['p99_ms'] or 0:8.2f} ms  errors {cell['errors']}",
                            flush=True,
                        )
    finally:
        for process, _ in servers.values():
            process.terminate()
        for process, _ in servers.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    table = render(results, machine, args)
    print(table)
    if args.out_dir:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        (args.out_dir / "serve_load.md").write_text(table + "\n")
        serial = [{"workload": w, "contender": c, "concurrency": n, "rounds": r} for (w, c, n), r in results.items()]
        (args.out_dir / "serve_load.json").write_text(
            json.dumps({"machine": machine, "argv": sys.argv[1:], "results": serial}, indent=1)
        )
        chart(results, args.out_dir / "serve_load.png", machine)


if __name__ == "__main__":
    main()
