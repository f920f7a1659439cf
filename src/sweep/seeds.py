"""Sweeps over `seed`: the completed jobs grouped by their other swept keys, the statistics over
the seeds (`seeds.csv`), and the plot (`sweep.png`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from src.io import output_file
from src.sweep.naming import short_names
from src.sweep.rows import Row, as_number

SEED_KEY = "seed"


@dataclass
class Group:
    values: dict[str, str]  # the other swept keys
    seeds: list[str]
    metrics: dict[str, list[float]]


def seed_groups(rows: list[Row], keys: list[str]) -> list[Group]:
    """Completed jobs grouped by their swept keys other than `seed`, in sweep order."""
    others = [k for k in keys if k != SEED_KEY]
    groups: dict[tuple, Group] = {}
    for r in sorted(rows, key=lambda r: r.job):
        ident = tuple(r.values.get(k, "") for k in others)
        g = groups.setdefault(ident, Group(dict(zip(others, ident)), [], {}))
        if r.status != "ok":
            continue
        g.seeds.append(r.values.get(SEED_KEY, ""))
        for m, v in r.metrics.items():
            if not math.isnan(v):
                g.metrics.setdefault(m, []).append(v)
    return list(groups.values())


def stats(values: list[float]) -> dict[str, float | int | None]:
    """mean, sample standard deviation (none for one value), min, max, n."""
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {
        "mean": statistics.fmean(values),
        "std": std,
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def over_seeds(groups: list[Group]) -> str:
    """`Over seed=0,1,2`: the seeds of the completed jobs, in numeric order where numbers."""
    seeds = {s for g in groups for s in g.seeds}
    order = sorted(seeds, key=lambda s: (as_number(s) is None, as_number(s) or 0.0, s))
    return f"Over {SEED_KEY}={','.join(order)}"


def plot_seeds(groups: list[Group], keys: list[str], metrics: list[str], path: Path) -> None:
    """Each metric against the swept value(s): one point per seed, and the mean with its std."""
    from matplotlib.figure import Figure  # no pyplot: files only, whatever the backend

    if not metrics:
        raise ValueError("no job completed with a metric")
    names = short_names(keys)
    labels = [",".join(f"{names[k]}={v}" for k, v in g.values.items()) or "all" for g in groups]
    numeric = [as_number(g.values[keys[0]]) for g in groups] if len(keys) == 1 else []
    use_numbers = bool(numeric) and all(x is not None for x in numeric)
    xs = numeric if use_numbers else list(range(len(groups)))
    fig = Figure(figsize=(4.5 * len(metrics), 3.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        means = [(x, stats(g.metrics.get(m, []))) for x, g in zip(xs, groups)]
        means = [(x, s) for x, s in means if s["n"]]
        ax.errorbar(
            [x for x, _ in means],
            [s["mean"] for _, s in means],
            yerr=[s["std"] or 0.0 for _, s in means],
            color="tab:red",
            marker="o",
            capsize=4,
            label="mean ± std",
            zorder=2,
        )
        for x, g in zip(xs, groups):
            ys = g.metrics.get(m, [])
            ax.scatter([x] * len(ys), ys, s=22, color="tab:blue", label="each seed", zorder=3)
        if use_numbers:
            if min(xs) > 0 and max(xs) / min(xs) >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(names[keys[0]])
        else:
            ax.set_xticks(xs, labels, rotation=30 if len(groups) > 3 else 0)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
        handles, titles = ax.get_legend_handles_labels()
        unique = dict(zip(titles, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.suptitle(over_seeds(groups))
    fig.tight_layout()
    with output_file(Path(path), "figure") as tmp:
        fig.savefig(tmp, dpi=100, format="png")
