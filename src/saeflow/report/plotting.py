"""What every figure of the report shares: atomic saving, violins and boxes, layer ticks, kind colours,
the log2 axis and reference curves, stats boxes.

Every figure function of saeflow.report takes tidy pandas tables and an output path, writes one PNG
atomically (``save``: a temporary name in the same folder, then ``os.replace``), closes its figure and
returns None. Parent folders are created. Entropies are in bits; the largest possible value for a window of
T tokens is log2 T, drawn as a dashed reference wherever T is known. Empty inputs give a figure with a
"no data" note instead of an error; NaN values are dropped before drawing.

matplotlib (Agg) is imported inside the functions so that importing this module is instant.
"""

from __future__ import annotations

import math
import os
import uuid
from pathlib import Path

import numpy as np

GRID_KINDS = ("violin", "boxplot")
KIND_ORDER = ("echo", "topic", "filler")
KIND_COLOURS = {"echo": "tab:red", "topic": "tab:blue", "filler": "tab:gray"}




def save(fig, path: Path) -> None:
    """Write a figure atomically: a hidden temporary file in the same folder, then os.replace."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    fig.savefig(tmp, dpi=130, bbox_inches="tight")
    os.replace(tmp, path)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def finish(fig, path) -> None:
    plt = pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        save(fig, path)
    finally:
        plt.close(fig)


def no_data(ax, msg: str = "no data") -> None:
    ax.text(0.5, 0.5, msg, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.35",
            bbox=dict(boxstyle="round", facecolor="0.95", edgecolor="0.7"))
    ax.set_xticks([])
    ax.set_yticks([])


def finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def spacing(positions) -> float:
    p = np.unique(np.asarray(positions, dtype=float))
    return float(np.min(np.diff(p))) if len(p) > 1 else 1.0


def violins(ax, data: list, positions: list, width: float, color, alpha: float = 0.45) -> None:
    """Violins for groups with >= 2 distinct finite values; a single marker (with its median tick) for
    degenerate groups, where a kernel density is undefined. Empty groups are skipped."""
    full, full_pos, deg, deg_pos = [], [], [], []
    for d, p in zip(data, positions):
        d = finite(d)
        if len(d) == 0:
            continue
        if len(np.unique(d)) >= 2:
            full.append(d)
            full_pos.append(p)
        else:
            deg.append(d[0])
            deg_pos.append(p)
    if full:
        parts = ax.violinplot(full, positions=full_pos, widths=width, showmedians=True, showextrema=False)
        for body in parts["bodies"]:
            body.set_facecolor(color)
            body.set_edgecolor(color)
            body.set_alpha(alpha)
        parts["cmedians"].set_color("black")
        parts["cmedians"].set_linewidth(1.2)
    if deg:
        ax.scatter(deg_pos, deg, marker="_", s=120, color="black", linewidths=1.5, zorder=3)
        ax.scatter(deg_pos, deg, marker="o", s=14, color=color, zorder=3)


def boxes(ax, data: list, positions: list, width: float, color) -> None:
    keep = [(finite(d), p) for d, p in zip(data, positions)]
    keep = [(d, p) for d, p in keep if len(d)]
    if not keep:
        return
    bp = ax.boxplot([d for d, _ in keep], positions=[p for _, p in keep], widths=width, patch_artist=True,
                    manage_ticks=False, showfliers=True,
                    flierprops=dict(marker=".", markersize=3, markerfacecolor=color, markeredgecolor=color,
                                    alpha=0.5),
                    medianprops=dict(color="black", linewidth=1.2),
                    whiskerprops=dict(color=color), capprops=dict(color=color))
    for box in bp["boxes"]:
        box.set_facecolor(color)
        box.set_alpha(0.55)
        box.set_edgecolor(color)


def layer_ticks(ax, layers, labels=None, max_labels: int = 16, fontsize: float = 8) -> None:
    """Ticks at every layer present; with many layers only every k-th one is labelled."""
    layers = list(layers)
    labels = [str(int(l)) for l in layers] if labels is None else list(labels)
    step = max(1, math.ceil(len(layers) / max_labels))
    ax.set_xticks(layers)
    ax.set_xticklabels([lab if i % step == 0 else "" for i, lab in enumerate(labels)],
                       fontsize=fontsize)


def kind_colour(kind, others: dict) -> str:
    if kind in KIND_COLOURS:
        return KIND_COLOURS[kind]
    if kind not in others:
        cycle = ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
        others[kind] = cycle[len(others) % len(cycle)]
    return others[kind]


def kind_order(kinds) -> list:
    kinds = [k for k in dict.fromkeys(kinds) if isinstance(k, str) or not isnan(k)]
    first = [k for k in KIND_ORDER if k in kinds]
    return first + sorted((k for k in kinds if k not in KIND_ORDER), key=str)


def isnan(x) -> bool:
    try:
        return bool(np.isnan(x))
    except (TypeError, ValueError):
        return x is None


def ok_events(rows):
    """Rows with status == "ok" and a finite H_pos."""
    if rows is None or len(rows) == 0:
        return rows.iloc[0:0] if rows is not None else None
    ok = rows["status"].astype(str).eq("ok") if "status" in rows else np.ones(len(rows), dtype=bool)
    h = rows["H_pos"].astype(float)
    return rows[ok & np.isfinite(h)]


def has_kinds(df) -> bool:
    return df is not None and "kind" in df.columns and df["kind"].notna().any()


def majority(series):
    s = series.dropna()
    if len(s) == 0:
        return np.nan
    return s.astype(str).value_counts().sort_index().idxmax()


def log2_xaxis(ax, values) -> None:
    """log2 x axis with ticks at the given values (plain integers), or at powers of 2 when they are many."""
    from matplotlib.ticker import FixedLocator, NullLocator

    vals = sorted({int(v) for v in values})
    ax.set_xscale("log", base=2)
    if len(vals) > 10:
        lo, hi = math.floor(math.log2(vals[0])), math.ceil(math.log2(vals[-1]))
        vals = [2 ** e for e in range(lo, hi + 1)]
    ax.xaxis.set_major_locator(FixedLocator(vals))
    ax.set_xticklabels([str(v) for v in vals], fontsize=8)
    ax.xaxis.set_minor_locator(NullLocator())


def fmt_stat(key: str, v) -> str | None:
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        fv = float(v)
        if not np.isfinite(fv):
            return "n/a"
        return f"{fv:.2g}" if key.endswith("_p") or key == "p" or "pvalue" in key or "p_value" in key else f"{fv:.3g}"
    if isinstance(v, str):
        return v if len(v) <= 40 else v[:37] + "..."
    return None  # lists, arrays, tables: not printed


def stats_text(stats: dict) -> str:
    """One line per scalar entry; a dict entry (e.g. {"n_latents": {"echo": 3, "topic": 4}}) on one line
    as a header line then one indented "kind = value" line per kind (echo, topic, filler first); other
    values are skipped."""
    names = {"mann_whitney_p": "Mann-Whitney p", "n_echo": "n echo", "n_topic": "n topic",
             "n_filler": "n filler", "median_echo": "median echo", "median_topic": "median topic",
             "median_filler": "median filler", "median_H_pos": "median H_pos", "n_latents": "n latents",
             "n_per_kind_for_80pct_power": "n per kind for 80% power"}
    lines = []
    for k, v in stats.items():
        label = names.get(k, str(k).replace("_", " "))
        if isinstance(v, dict):
            parts = [f"  {kk} = {fmt_stat(str(k), v[kk])}" for kk in kind_order(list(v))
                     if fmt_stat(str(k), v[kk]) is not None]
            if parts:
                lines += [f"{label}:"] + parts
            continue
        sv = fmt_stat(str(k), v)
        if sv is not None:
            lines.append(f"{label} = {sv}")
    return "\n".join(lines)


def first_int(a, b, col):
    """First non-null value of col in a, else in b, as int; None when absent."""
    for df in (a, b):
        if col in df.columns and df[col].notna().any():
            return int(df[col].dropna().iloc[0])
    return None


def ref_curve(ax, ctxs, label: str = "log2 ctx (max H_pos)") -> None:
    ctxs = sorted(ctxs)
    if len(ctxs) >= 2:
        xs = np.geomspace(ctxs[0], ctxs[-1], 50)
    else:
        xs = np.array(ctxs, dtype=float)
    ax.plot(xs, np.log2(xs), ls="--", color="black", lw=1, label=label,
            marker=None if len(xs) > 1 else "_", ms=12)
