"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib as mpl

mpl.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from benchmarks.suite import Results


def model_plot(results: Results, path: Path) -> None:
    """Articles/s by batch size, one line per layout and device, with the spread shaded."""
    figure, axes = plt.subplots(figsize=(7, 4))
    keys = sorted({(r.device, r.runtime, r.strategy) for r in results.model_rows})
    for device, runtime, strategy in keys:
        rows = [
            r
            for r in results.model_rows
            if (r.device, r.runtime, r.strategy) == (device, runtime, strategy)
        ]
        sizes = [r.batch_size for r in rows]
        axes.plot(
            sizes,
            [r.articles_per_s.median for r in rows],
            marker="o",
            label=f"{strategy} ({runtime}, {device})",
        )
        axes.fill_between(
            sizes,
            [r.articles_per_s.low for r in rows],
            [r.articles_per_s.high for r in rows],
            alpha=0.2,
        )
    axes.set_xscale("log", base=2)
    axes.set_xlabel("batch size (articles)")
    axes.set_ylabel("articles/s (median, min–max shaded)")
    axes.set_title(f"Model only, {results.model} model, 1 thread")
    axes.grid(alpha=0.3)
    axes.legend()
    save(figure, path)


def throughput_plot(results: Results, path: Path) -> None:
    """Articles/s of each way to run the model, median with min–max error bars."""
    e2e = results.end_to_end
    bars = [
        ("naive loop", results.naive),
        *[(f"1 worker, {g.guarantee.replace('_', '-')}", g.max_per_s) for g in e2e.guarantees],
        ("2 workers, at-least-once", e2e.scale_out[2]),
        (f"model only, batch {results.plan.worker_batch_size}", e2e.model_only),
        ("client ceiling (decode only)", results.ceiling),
    ]
    figure, axes = plt.subplots(figsize=(7, 4))
    medians = [s.median for _, s in bars]
    errors = [[s.median - s.low for _, s in bars], [s.high - s.median for _, s in bars]]
    axes.barh([name for name, _ in bars], medians, xerr=errors, color="tab:blue", alpha=0.8)
    axes.set_xscale("log")
    axes.set_xlabel("articles/s (log scale)")
    axes.set_title("Throughput, one run")
    axes.grid(axis="x", alpha=0.3)
    save(figure, path)


def latency_plot(results: Results, path: Path) -> None:
    """p50/p95/p99 by offered load, both delivery guarantees."""
    figure, axes = plt.subplots(figsize=(7, 4))
    styles = {"at_least_once": "-", "exactly_once": "--"}
    for g in results.end_to_end.guarantees:
        loads = [100 * load.fraction for load in g.loads]
        for name, colour in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            values = [getattr(load, f"{name}_ms") for load in g.loads]
            axes.plot(
                loads,
                values,
                styles[g.guarantee],
                color=colour,
                marker="o",
                label=f"{name}, {g.guarantee.replace('_', '-')}",
            )
    axes.set_yscale("log")
    axes.set_xlabel("offered load (% of that guarantee's maximum)")
    axes.set_ylabel("latency, ms (message timestamp → prediction)")
    axes.set_title("End-to-end latency, one worker")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    save(figure, path)


def save(figure: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


PLOTS = {
    "benchmarks-model.png": model_plot,
    "benchmarks-throughput.png": throughput_plot,
    "benchmarks-latency.png": latency_plot,
}


def draw(results: Results, directory: Path) -> list[Path]:
    """Every plot into ``directory``; their paths."""
    paths = []
    for name, plot in PLOTS.items():
        plot(results, directory / name)
        paths.append(directory / name)
    return paths
