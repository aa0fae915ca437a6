"""Benchmark results as JSON (for machines), Markdown (for the README) and a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._fileio import atomic_path, write_bytes_atomic, write_json_atomic

__all__ = ["targets", "to_markdown", "write_chart", "write_all"]


def _cell(results: dict[str, Any], name: str, batch: int) -> dict[str, float] | None:
    return results["timings"].get(name, {}).get(str(batch))


def _metric(results: dict[str, Any], name: str, batch: int, key: str) -> float | None:
    cell = _cell(results, name, batch)
    return None if cell is None else cell[key]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The speed targets as ratios measured in this run, each with its threshold and verdict.

    ``met`` is None when a figure is missing (a contender or measurement was
    skipped), so a missing figure never reads as a pass.
    """
    batches = results["config"]["batch_sizes"]
    rows: list[dict[str, Any]] = []

    def add(what: str, value: float | None, threshold: float, higher_is_better: bool = True) -> None:
        ok = None if value is None else (value >= threshold if higher_is_better else value <= threshold)
        rows.append(
            {
                "target": what,
                "value": value,
                "threshold": threshold,
                "direction": ">=" if higher_is_better else "<=",
                "met": ok,
            }
        )

    def tp(name: str, batch: int) -> float | None:
        return _metric(results, name, batch, "throughput_ips")

    def p50(name: str, batch: int) -> float | None:
        return _metric(results, name, batch, "p50_ms")

    big, one = max(batches), min(batches)
    add(f"ours int8 / LiteRT int8 throughput at batch {big}", _ratio(tp("ours-int8", big), tp("litert-int8", big)), 1.2)
    add(
        f"ours int8 / LiteRT int8 p50 latency at batch {one}",
        _ratio(p50("ours-int8", one), p50("litert-int8", one)),
        1 / 1.2,
        higher_is_better=False,
    )
    for b in batches:
        add(f"ours fp32 / LiteRT fp32 throughput at batch {b}", _ratio(tp("ours-fp32", b), tp("litert-fp32", b)), 1.3)
    for b in batches:
        add(f"ours fp32 / Keras model(x) throughput at batch {b}", _ratio(tp("ours-fp32", b), tp("keras-call", b)), 1.2)
    add(
        f"Keras model(x) / ours fp32 p50 latency at batch {one}",
        _ratio(p50("keras-call", one), p50("ours-fp32", one)),
        10.0,
    )
    e2e = results.get("end_to_end", {})
    ours_e2e, keras_e2e = e2e.get("ours-int8", {}), e2e.get("pandas+keras-predict", {})
    add(
        "end to end (read + infer + write): pandas + Keras model.predict / ours int8 time",
        _ratio(keras_e2e.get("median_s"), ours_e2e.get("median_s")),
        4.0,
    )
    acc_ours, acc_keras = ours_e2e.get("accuracy"), keras_e2e.get("accuracy")
    add(
        "end to end accuracy, |ours int8 - pandas + Keras| in percentage points",
        None if acc_ours is None or acc_keras is None else abs(acc_ours - acc_keras) * 100,
        0.1,
        higher_is_better=False,
    )
    cold = results.get("cold_start", {})
    ours_cold = [cold[k]["cold_start_s"] for k in ("ours-fp32", "ours-int8") if k in cold]
    add(
        "cold start to first prediction: ours (slower of fp32, int8) / TensorFlow (Keras)",
        _ratio(max(ours_cold) if ours_cold else None, cold.get("keras", {}).get("cold_start_s")),
        0.2,
        higher_is_better=False,
    )
    return rows


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def to_markdown(results: dict[str, Any]) -> str:
    """A README-ready summary: throughput and p50 latency per batch size, extras, and the targets."""
    batches = results["config"]["batch_sizes"]
    names = list(results["timings"])
    cpu = results["machine"]["cpu"]
    v = results["versions"]
    feats = ", ".join(k for k, on in cpu["int8_features"].items() if on) or "none"
    cores = f"{cpu['usable_cores']} usable cores"
    if cpu.get("physical_cores"):
        cores += f" ({cpu['physical_cores']} physical)"
    lines = [
        f"Machine: {cpu['model']}, {cores}; int8-relevant CPU features: {feats}.  "
        f"onnxruntime {v.get('onnxruntime') or v.get('onnxruntime-gpu')}, TensorFlow {v.get('tensorflow', 'n/a')}, "
        f"Keras {v.get('keras', 'n/a')}, LiteRT {v.get('ai-edge-litert', 'n/a')}, Python {v['python']}.  "
        f"Threads: {results['config']['threads_note']}.",
        "",
        f"Throughput in images/s (p50 latency per call in ms), {results['config']['rounds_note']}:",
        "",
        "| contender | " + " | ".join(f"batch {b}" for b in batches) + " | accuracy |",
        "|---|" + "---:|" * (len(batches) + 1),
    ]
    for name in names:
        cells = []
        for b in batches:
            cell = _cell(results, name, b)
            cells.append(f"{cell['throughput_ips']:,.0f} ({cell['p50_ms']:.2f})" if cell else "n/a")
        acc = results.get("accuracy", {}).get(name)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'n/a' if acc is None else f'{acc:.2%}'} |")
    one = min(batches)
    lines += [
        "",
        f"Latency at batch {one}, ms: "
        + "; ".join(
            f"{n} p50 {c['p50_ms']:.2f} / p90 {c['p90_ms']:.2f} / p99 {c['p99_ms']:.2f}"
            for n in names
            if (c := _cell(results, n, one))
        ),
    ]
    best = {n: max(c["gflops"] for b in batches if (c := _cell(results, n, b))) for n in names}
    lines += [
        "",
        f"Best achieved GFLOP/s (at {results['flop_per_image'] / 1e6:.1f} MFLOP per image): "
        + ", ".join(f"{n} {g:.1f}" for n, g in best.items())
        + ".",
    ]
    if results.get("end_to_end"):
        lines += [
            "",
            f"End to end over {results['end_to_end_rows']} (read + infer + write a submission), "
            f"median of {results['config']['end_to_end_repeats']}: "
            + "; ".join(
                f"{k} {e['median_s']:.2f} s" + ("" if e["accuracy"] is None else f" ({e['accuracy']:.2%})")
                for k, e in results["end_to_end"].items()
            )
            + ".",
        ]
    if results.get("cold_start"):
        lines += [
            "",
            "Cold start in a fresh process (imports + model load + first prediction) / peak RSS after "
            "5 batches of 512: "
            + "; ".join(
                f"{k} {c['cold_start_s']:.2f} s / {_fmt(c['peak_rss_mib'], 0)} MiB"
                for k, c in results["cold_start"].items()
            )
            + ".",
        ]
    for note in results.get("notes", []):
        lines += ["", f"Note: {note}"]
    lines += ["", "| target | measured | needed | met |", "|---|---:|---:|---|"]
    for t in results.get("targets", []):
        verdict = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        lines.append(f"| {t['target']} | {_fmt(t['value'])} | {t['direction']} {_fmt(t['threshold'])} | {verdict} |")
    return "\n".join(lines) + "\n"


def write_chart(results: dict[str, Any], path: Path) -> None:
    """Throughput and p50 latency against batch size, one line per contender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = results["config"]["batch_sizes"]
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in results["timings"]:
        cells = [_cell(results, name, b) for b in batches]
        xs = [b for b, c in zip(batches, cells, strict=True) if c]
        style = "-" if name.startswith("ours") else "--"
        ax_tp.plot(xs, [c["throughput_ips"] for c in cells if c], style, marker="o", label=name)
        ax_lat.plot(xs, [c["p50_ms"] for c in cells if c], style, marker="o", label=name)
    for ax, title, ylabel in (
        (ax_tp, "throughput (higher is better)", "images / s"),
        (ax_lat, "p50 latency (lower is better)", "ms per call"),
    ):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    ax_tp.legend(fontsize=8)
    fig.suptitle(
        f"digit CNN on {results['machine']['cpu']['model']} ({results['machine']['cpu']['usable_cores']} cores)",
        fontsize=10,
    )
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
