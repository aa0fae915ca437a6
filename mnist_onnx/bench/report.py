"""Benchmark results as JSON (for machines), Markdown (for the README) and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._fileio import atomic_path, write_bytes_atomic, write_json_atomic

__all__ = ["targets", "to_markdown", "write_chart", "write_all"]


def _tp(results: dict, name: str, batch: int) -> float | None:
    cell = results["timings"].get(name, {}).get(str(batch)) or results["timings"].get(name, {}).get(batch)
    return None if cell is None else cell["throughput_ips"]


def _p50(results: dict, name: str, batch: int) -> float | None:
    cell = results["timings"].get(name, {}).get(str(batch)) or results["timings"].get(name, {}).get(batch)
    return None if cell is None else cell["p50_ms"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets as measured ratios (same run), each with its threshold and verdict."""
    batches = results["config"]["batch_sizes"]
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, threshold: float, higher_is_better: bool = True) -> None:
        ok = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        rows.append({"target": what, "value": value, "threshold": threshold,
                     "direction": ">=" if higher_is_better else "<=", "met": ok})

    big, one = max(batches), min(batches)
    add(f"int8 throughput at batch {big} / LiteRT int8", _ratio(_tp(results, "ours-int8", big), _tp(results, "litert-int8", big)), 1.2)
    add(f"int8 p50 latency at batch {one} / LiteRT int8", _ratio(_p50(results, "ours-int8", one), _p50(results, "litert-int8", one)), 1 / 1.2, False)
    for b in batches:
        add(f"fp32 throughput at batch {b} / LiteRT fp32", _ratio(_tp(results, "ours-fp32", b), _tp(results, "litert-fp32", b)), 1.3)
        add(f"fp32 throughput at batch {b} / Keras model(x)", _ratio(_tp(results, "ours-fp32", b), _tp(results, "keras-call", b)), 1.2)
    add(f"Keras model(x) p50 latency / fp32 p50 latency at batch {one}",
        _ratio(_p50(results, "keras-call", one), _p50(results, "ours-fp32", one)), 10.0)
    e2e = results.get("end_to_end_s", {})
    add("end to end over test.csv: pandas + Keras predict / ours int8",
        _ratio(e2e.get("pandas+keras-predict"), e2e.get("ours-int8")), 4.0)
    acc = results.get("accuracy", {})
    if "ours-int8" in acc and "keras-predict" in acc:
        add("accuracy difference ours int8 - Keras (percentage points, absolute)",
            abs(acc["ours-int8"] - acc["keras-predict"]) * 100, 0.1, False)
    cold = results.get("cold_start", {})
    if "ours" in cold and "keras" in cold:
        add("cold start to first prediction: ours / TensorFlow",
            _ratio(cold["ours"]["cold_start_s"], cold["keras"]["cold_start_s"]), 0.2, False)
    return rows


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def to_markdown(results: dict[str, Any]) -> str:
    """A README-ready summary: throughput and p50 latency per batch size, extras, and the targets."""
    batches = results["config"]["batch_sizes"]
    names = list(results["timings"])
    cpu = results["machine"]["cpu"]
    feats = ", ".join(k for k, v in cpu["int8_features"].items() if v) or "none"
    lines = [
        f"Machine: {cpu['model']}, {cpu['affinity_cores']} cores usable ({feats}); "
        f"onnxruntime {results['versions'].get('onnxruntime') or results['versions'].get('onnxruntime-gpu')}, "
        f"TensorFlow {results['versions'].get('tensorflow', 'n/a')}, LiteRT {results['versions'].get('ai-edge-litert', 'n/a')}. "
        f"Model: {results['model']['keras']}.",
        "",
        "Throughput, images/s (p50 latency, ms):",
        "",
        "| contender | " + " | ".join(f"batch {b}" for b in batches) + " | accuracy |",
        "|---|" + "---|" * (len(batches) + 1),
    ]
    for name in names:
        cells = []
        for b in batches:
            cell = results["timings"][name].get(str(b)) or results["timings"][name].get(b)
            cells.append(f"{cell['throughput_ips']:,.0f} ({cell['p50_ms']:.2f})" if cell else "n/a")
        acc = results.get("accuracy", {}).get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'n/a' if acc is None else f'{acc:.2%}'} |")
    gf = {n: max((results["timings"][n].get(str(b)) or results["timings"][n].get(b) or {"gflops": 0})["gflops"]
                 for b in batches) for n in names}
    lines += ["", "Best achieved GFLOP/s (at " + f"{_flop_m(results)} MFLOP per image): "
              + ", ".join(f"{n} {v:.1f}" for n, v in gf.items()), ""]
    if results.get("end_to_end_s"):
        lines += ["End to end over " + results["end_to_end_rows"] + " (read + infer + write), median seconds: "
                  + ", ".join(f"{k} {v:.2f}" for k, v in results["end_to_end_s"].items()), ""]
    if results.get("cold_start"):
        lines += ["Cold start (import + load + first prediction) and peak RSS: "
                  + ", ".join(f"{k} {v['cold_start_s']:.2f} s / {v['peak_rss_mb']:.0f} MB"
                              for k, v in results["cold_start"].items()), ""]
    lines += ["| target | measured | needed | met |", "|---|---|---|---|"]
    for t in results.get("targets", []):
        verdict = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['direction']} {_fmt(t['threshold'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def _flop_m(results: dict[str, Any]) -> str:
    return f"{results['flop_per_image'] / 1e6:.1f}"


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput and p50 latency against batch size, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = results["config"]["batch_sizes"]
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, cells in results["timings"].items():
        tp = [(cells.get(str(b)) or cells.get(b))["throughput_ips"] for b in batches]
        lat = [(cells.get(str(b)) or cells.get(b))["p50_ms"] for b in batches]
        style = "-" if name.startswith("ours") else "--"
        ax_tp.plot(batches, tp, style, marker="o", label=name)
        ax_lat.plot(batches, lat, style, marker="o", label=name)
    for ax, title, ylabel in ((ax_tp, "throughput (higher is better)", "images / s"),
                              (ax_lat, "p50 latency (lower is better)", "ms per call")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_tp.legend(fontsize=8)
    fig.suptitle(f"digit CNN on {results['machine']['cpu']['model']}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def write_all(results: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``results.png`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md", "chart": out_dir / "results.png"}
    write_json_atomic(paths["json"], results)
    write_bytes_atomic(paths["markdown"], to_markdown(results).encode())
    write_chart(results, paths["chart"])
    return paths
