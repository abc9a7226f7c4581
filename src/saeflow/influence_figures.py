"""Figures for the feature-influence analyses (spec: metrics.md, "Feature influence and its entropy").

Every function takes tidy pandas tables and an output path, writes one PNG atomically (through
``saeflow.figures._save``: a temporary name in the same folder, then ``os.replace``), closes its figure and
returns None. ``layer_entropy_plots`` writes three PNGs into a folder. Parent folders are created.

Entropies are in bits; the largest possible value for a window of T tokens is log2 T, drawn as a dashed
reference wherever T is known. Empty inputs (no rows, or no "ok" H_pos events) give a figure with a
"no data" note instead of an error. NaN entropies / H_pos values are dropped before drawing.

matplotlib (Agg) is imported inside the functions so that importing this module is instant.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from saeflow.figures import _save

GRID_KINDS = ("violin", "boxplot")
KIND_ORDER = ("echo", "topic", "filler")
KIND_COLOURS = {"echo": "tab:red", "topic": "tab:blue", "filler": "tab:gray"}

__all__ = [
    "entropy_depth_figure",
    "layer_entropy_plots",
    "entropy_grid_figure",
    "h_pos_overview",
    "h_pos_vs_ctxlen",
    "ctxlen_sweep_figure",
    "ground_truth_figure",
]


# ----------------------------------------------------------------------------------------------- helpers


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(fig, path) -> None:
    plt = _plt()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        _save(fig, path)
    finally:
        plt.close(fig)


def _no_data(ax, msg: str = "no data") -> None:
    ax.text(0.5, 0.5, msg, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="0.35",
            bbox=dict(boxstyle="round", facecolor="0.95", edgecolor="0.7"))
    ax.set_xticks([])
    ax.set_yticks([])


def _finite(values) -> np.ndarray:
    a = np.asarray(values, dtype=float)
    return a[np.isfinite(a)]


def _spacing(positions) -> float:
    p = np.unique(np.asarray(positions, dtype=float))
    return float(np.min(np.diff(p))) if len(p) > 1 else 1.0


def _violins(ax, data: list, positions: list, width: float, color, alpha: float = 0.45) -> None:
    """Violins for groups with >= 2 distinct finite values; a single marker (with its median tick) for
    degenerate groups, where a kernel density is undefined. Empty groups are skipped."""
    full, full_pos, deg, deg_pos = [], [], [], []
    for d, p in zip(data, positions):
        d = _finite(d)
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


def _boxes(ax, data: list, positions: list, width: float, color) -> None:
    keep = [(_finite(d), p) for d, p in zip(data, positions)]
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


def _layer_ticks(ax, layers, labels=None, max_labels: int = 16, fontsize: float = 8) -> None:
    """Ticks at every layer present; with many layers only every k-th one is labelled."""
    layers = list(layers)
    labels = [str(int(l)) for l in layers] if labels is None else list(labels)
    step = max(1, math.ceil(len(layers) / max_labels))
    ax.set_xticks(layers)
    ax.set_xticklabels([lab if i % step == 0 else "" for i, lab in enumerate(labels)],
                       fontsize=fontsize)


def _kind_colour(kind, others: dict) -> str:
    if kind in KIND_COLOURS:
        return KIND_COLOURS[kind]
    if kind not in others:
        cycle = ["tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive", "tab:cyan"]
        others[kind] = cycle[len(others) % len(cycle)]
    return others[kind]


def _kind_order(kinds) -> list:
    kinds = [k for k in dict.fromkeys(kinds) if isinstance(k, str) or not _isnan(k)]
    first = [k for k in KIND_ORDER if k in kinds]
    return first + sorted((k for k in kinds if k not in KIND_ORDER), key=str)


def _isnan(x) -> bool:
    try:
        return bool(np.isnan(x))
    except (TypeError, ValueError):
        return x is None


def _ok_events(rows):
    """Rows with status == "ok" and a finite H_pos."""
    if rows is None or len(rows) == 0:
        return rows.iloc[0:0] if rows is not None else None
    ok = rows["status"].astype(str).eq("ok") if "status" in rows else np.ones(len(rows), dtype=bool)
    h = rows["H_pos"].astype(float)
    return rows[ok & np.isfinite(h)]


def _has_kind(df) -> bool:
    return df is not None and "kind" in df.columns and df["kind"].notna().any()


def _majority(series):
    s = series.dropna()
    if len(s) == 0:
        return np.nan
    return s.astype(str).value_counts().sort_index().idxmax()


def _log2_xaxis(ax, values) -> None:
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


def _fmt_stat(key: str, v) -> str | None:
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


def _stats_text(stats: dict) -> str:
    """One line per scalar entry; a dict entry (e.g. {"n_latents": {"echo": 3, "topic": 4}}) on one line
    as a header line then one indented "kind = value" line per kind (echo, topic, filler first); other
    values are skipped."""
    names = {"mann_whitney_p": "Mann-Whitney p", "n_echo": "n echo", "n_topic": "n topic",
             "n_filler": "n filler", "median_echo": "median echo", "median_topic": "median topic",
             "median_filler": "median filler", "median_H_pos": "median H_pos", "n_latents": "n latents"}
    lines = []
    for k, v in stats.items():
        label = names.get(k, str(k).replace("_", " "))
        if isinstance(v, dict):
            parts = [f"  {kk} = {_fmt_stat(str(k), v[kk])}" for kk in _kind_order(list(v))
                     if _fmt_stat(str(k), v[kk]) is not None]
            if parts:
                lines += [f"{label}:"] + parts
            continue
        sv = _fmt_stat(str(k), v)
        if sv is not None:
            lines.append(f"{label} = {sv}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------- figures


def entropy_depth_figure(features, windows, ctx_len: int, title: str, path) -> None:
    """Feature-influence entropy vs depth for one (preset, dataset).

    Per layer (x): a violin of the per-latent mean entropy (each latent's entropy averaged over the windows
    where it was active), a line of the mean entropy of the 20 most frequently active latents (by number of
    windows active, ties broken by mean activation), a line of the mean token-vector entropy over windows,
    and a dashed reference at log2(ctx_len), the maximum possible entropy. The x tick labels give the layer
    and the number of distinct active latents at it.

    features: layer, window_idx, feature_id, entropy, activation (one row per active (window, latent)).
    windows: layer, window_idx, start_idx, token_vector_entropy, num_active_features.
    """
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    f = features[np.isfinite(features["entropy"].astype(float))] if len(features) else features
    layers = sorted({int(x) for x in f["layer"]} | {int(x) for x in windows["layer"]}) if (
        len(f) or len(windows)) else []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) + 3.5), 4.6))
    ax.set_title(title, fontsize=10)
    if not layers:
        _no_data(ax, "no data (no active latents, no windows)")
        _finish(fig, path)
        return

    width = 0.7 * _spacing(layers)
    log2t = math.log2(ctx_len) if ctx_len and ctx_len > 0 else None
    ymax = log2t or 0.0
    counts = {}
    handles = []
    if len(f):
        per = (f.groupby(["layer", "feature_id"], sort=True)
                .agg(mean_entropy=("entropy", "mean"), n_windows=("window_idx", "nunique"),
                     mean_act=("activation", "mean"))
                .reset_index())
        data = [per.loc[per["layer"] == l, "mean_entropy"].to_numpy() for l in layers]
        counts = {l: int((per["layer"] == l).sum()) for l in layers}
        _violins(ax, data, layers, width, "tab:blue")
        handles.append(Patch(facecolor="tab:blue", alpha=0.45, edgecolor="tab:blue",
                             label="per-latent mean entropy\n(distribution; bar = median)"))
        top = (per.sort_values(["layer", "n_windows", "mean_act"], ascending=[True, False, False])
                  .groupby("layer", sort=True).head(20)
                  .groupby("layer", sort=True)["mean_entropy"].mean())
        ax.plot(top.index, top.to_numpy(), "o-", color="tab:orange", lw=1.8, ms=5, zorder=4)
        handles.append(Line2D([], [], color="tab:orange", marker="o", lw=1.8,
                              label="top-20 latents (most windows active)"))
        ymax = max(ymax, float(per["mean_entropy"].max()))
    if len(windows):
        tok = windows.groupby("layer", sort=True)["token_vector_entropy"].mean().dropna()
        if len(tok):
            ax.plot(tok.index, tok.to_numpy(), "s-", color="tab:green", lw=1.8, ms=5, zorder=4)
            handles.append(Line2D([], [], color="tab:green", marker="s", lw=1.8,
                                  label="token-vector entropy (mean)"))
            ymax = max(ymax, float(tok.max()))
    if log2t is not None:
        ax.axhline(log2t, color="black", ls="--", lw=1)
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label=f"log2 T = {log2t:.3g} (T = {ctx_len})"))
    if not len(f):
        ax.set_title(f"{title}\n(no active latents: token-vector entropy only)", fontsize=10)

    _layer_ticks(ax, layers, [f"{l}\nn={counts.get(l, 0)}" for l in layers], max_labels=40,
                 fontsize=8 if len(layers) <= 14 else 7)
    ax.set_xlim(layers[0] - width, layers[-1] + width)
    ax.set_ylim(0, max(ymax, 1e-3) * 1.06)
    ax.set_xlabel("layer  (n = distinct active latents)")
    ax.set_ylabel("entropy (bits)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    _finish(fig, path)


def layer_entropy_plots(features, windows, layer: int, out_dir) -> None:
    """Three diagnostics for one layer, written into out_dir (created):

    entropy_hist.png: histogram of the per-(window, latent) entropies, with the mean token-vector entropy
    over windows marked; entropy_vs_activation.png: entropy vs activation scatter (log x when every
    activation is positive) with the binned median; num_active_hist.png: histogram of the number of active
    latents per window, mean marked.
    """
    plt = _plt()
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = features[features["layer"] == layer] if len(features) else features
    f = f[np.isfinite(f["entropy"].astype(float))] if len(f) else f
    w = windows[windows["layer"] == layer] if len(windows) else windows
    n_win = int(w["window_idx"].nunique()) if len(w) else (int(f["window_idx"].nunique()) if len(f) else 0)
    tok = _finite(w["token_vector_entropy"]) if len(w) else np.array([])

    # entropy histogram
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_title(f"Layer {layer}: entropy of active (window, latent) pairs\n"
                 f"{len(f)} pairs, {f['feature_id'].nunique() if len(f) else 0} latents, {n_win} windows",
                 fontsize=10)
    if len(f):
        ax.hist(f["entropy"].astype(float), bins=min(60, max(10, int(np.sqrt(len(f))))), color="tab:blue",
                alpha=0.75, edgecolor="white", linewidth=0.4, label="latent entropy")
        ax.axvline(float(f["entropy"].mean()), color="tab:blue", ls=":", lw=1.5,
                   label=f"mean latent entropy = {f['entropy'].mean():.2f}")
        if len(tok):
            ax.axvline(tok.mean(), color="tab:green", lw=2,
                       label=f"mean token-vector entropy = {tok.mean():.2f}")
        ax.set_xlabel("entropy (bits)")
        ax.set_ylabel("(window, latent) pairs")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, f"no active latents at layer {layer}")
    fig.tight_layout()
    _finish(fig, out_dir / "entropy_hist.png")

    # entropy vs activation
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_title(f"Layer {layer}: entropy vs activation ({len(f)} active (window, latent) pairs)", fontsize=10)
    if len(f):
        act = f["activation"].astype(float).to_numpy()
        ent = f["entropy"].astype(float).to_numpy()
        m = np.isfinite(act)
        act, ent = act[m], ent[m]
        logx = len(act) > 0 and bool(np.all(act > 0))
        alpha = float(np.clip(30.0 / np.sqrt(max(len(act), 1)), 0.08, 0.8))
        ax.scatter(act, ent, s=8, alpha=alpha, color="tab:blue", edgecolors="none", label="(window, latent)")
        if len(act) >= 20 and np.ptp(act) > 0:
            edges = (np.geomspace(act.min(), act.max(), 13) if logx else np.linspace(act.min(), act.max(), 13))
            idx = np.clip(np.digitize(act, edges) - 1, 0, len(edges) - 2)
            xs, ys = [], []
            for b in range(len(edges) - 1):
                sel = idx == b
                if sel.sum() >= 5:
                    xs.append(np.median(act[sel]))
                    ys.append(np.median(ent[sel]))
            if xs:
                ax.plot(xs, ys, "o-", color="tab:red", lw=1.8, ms=4, label="binned median")
        if logx:
            ax.set_xscale("log")
        if len(tok):
            ax.axhline(tok.mean(), color="tab:green", lw=1.5, ls="--", label="mean token-vector entropy")
        ax.set_xlabel("activation f_a(T-1)" + (" (log scale)" if logx else ""))
        ax.set_ylabel("entropy (bits)")
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, f"no active latents at layer {layer}")
    fig.tight_layout()
    _finish(fig, out_dir / "entropy_vs_activation.png")

    # number of active latents per window
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_title(f"Layer {layer}: active latents per window ({len(w)} windows)", fontsize=10)
    nact = _finite(w["num_active_features"]) if len(w) else np.array([])
    if len(nact):
        lo, hi = int(nact.min()), int(nact.max())
        step = max(1, math.ceil((hi - lo + 1) / max(10.0, min(50.0, 2 * math.sqrt(len(nact))))))
        bins = np.arange(lo, hi + step + 1, step) - 0.5
        ax.hist(nact, bins=bins, color="tab:purple", alpha=0.75, edgecolor="white", linewidth=0.4)
        ax.axvline(nact.mean(), color="black", ls="--", lw=1.2, label=f"mean = {nact.mean():.1f}")
        ax.set_xlabel("number of active latents at the last position")
        ax.set_ylabel("windows")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.grid(alpha=0.3)
    else:
        _no_data(ax, f"no windows at layer {layer}")
    fig.tight_layout()
    _finish(fig, out_dir / "num_active_hist.png")


def entropy_grid_figure(per_latent, token, path, kind: str = "violin",
                        ctx_len: dict[str, int] | None = None) -> None:
    """Per-latent mean entropy vs depth for every preset (one panel each) and dataset.

    Within a panel, per layer, one violin (kind="violin") or box (kind="boxplot") per dataset, side by
    side in the dataset's colour; the token-vector entropy per dataset as a line with markers in the same
    colour; and log2(ctx_len[preset]) dashed when ctx_len gives it. Panels share the y axis; the legend is
    drawn once, below the panels.

    per_latent: preset, dataset, layer, n_layers, feature_id, mean_entropy.
    token: preset, dataset, layer, n_layers, token_vector_entropy.
    """
    if kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, got kind={kind!r}")
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ctx_len = ctx_len or {}
    presets = sorted({str(p) for p in per_latent["preset"]} | {str(p) for p in token["preset"]}) if (
        len(per_latent) or len(token)) else []
    datasets = sorted({str(d) for d in per_latent["dataset"]} | {str(d) for d in token["dataset"]}) if presets else []
    n_layers = {p: _first_int(per_latent[per_latent["preset"].astype(str) == p],
                              token[token["preset"].astype(str) == p], "n_layers") for p in presets}
    # Smaller models first, then by name.
    presets.sort(key=lambda p: (n_layers[p] if n_layers[p] is not None else 10 ** 6, p))
    n_present = {p: len(set(per_latent.loc[per_latent["preset"].astype(str) == p, "layer"])
                        | set(token.loc[token["preset"].astype(str) == p, "layer"])) for p in presets}
    max_layers = max(n_present.values(), default=1)
    n = len(presets)
    if n <= 3:
        nrows, ncols = 1, max(n, 1)
    elif n == 4:
        nrows, ncols = 2, 2
    elif max_layers > 12:
        nrows, ncols = math.ceil(n / 2), 2
    else:
        nrows, ncols = math.ceil(n / 3), 3
    panel_w = float(np.clip(0.3 * max_layers * max(1, len(datasets)) ** 0.5 + 2.5, 4.2, 9.0))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_w * ncols, 3.5 * nrows + 1.0), squeeze=False,
                             sharey=True, layout="constrained")
    fig.suptitle("Feature-influence entropy vs depth", fontsize=12)
    fig.supylabel("per-latent mean entropy (bits)", fontsize=10)
    flat = axes.ravel()
    for ax in flat[n:]:
        ax.set_visible(False)
    if n == 0:
        flat[0].set_visible(True)
        _no_data(flat[0])
        _finish(fig, path)
        return

    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(datasets)}
    ymax = 0.0
    any_ref = False
    for ax, preset in zip(flat, presets):
        pl = per_latent[per_latent["preset"].astype(str) == preset]
        tk = token[token["preset"].astype(str) == preset]
        layers = sorted({int(x) for x in pl["layer"]} | {int(x) for x in tk["layer"]})
        nl = n_layers[preset]
        sp = _spacing(layers)
        width = 0.8 * sp / max(1, len(datasets))
        for i, d in enumerate(datasets):
            off = width * (i - (len(datasets) - 1) / 2)
            pd_ = pl[pl["dataset"].astype(str) == d]
            if len(pd_):
                data = [pd_.loc[pd_["layer"] == l, "mean_entropy"].to_numpy() for l in layers]
                pos = [l + off for l in layers]
                if kind == "violin":
                    _violins(ax, data, pos, width * 0.95, colours[d])
                else:
                    _boxes(ax, data, pos, width * 0.8, colours[d])
                fin = _finite(pd_["mean_entropy"])
                if len(fin):
                    ymax = max(ymax, float(fin.max()))
            td = tk[tk["dataset"].astype(str) == d]
            if len(td):
                t = td.groupby("layer", sort=True)["token_vector_entropy"].mean().dropna()
                if len(t):
                    ax.plot(t.index.to_numpy() + off, t.to_numpy(), "o-", color=colours[d], ms=4, lw=1.4,
                            markeredgecolor="black", markeredgewidth=0.6, zorder=4)
                    ymax = max(ymax, float(t.max()))
        T = ctx_len.get(preset)
        if T:
            ax.axhline(math.log2(T), color="black", ls="--", lw=1)
            ymax = max(ymax, math.log2(T))
            any_ref = True
        _layer_ticks(ax, layers, max_labels=14)
        ax.set_xlim(layers[0] - 0.5 * sp, layers[-1] + 0.5 * sp)
        ax.set_xlabel("layer")
        info = ([f"{nl} layers"] if nl is not None else []) + ([f"T = {T}"] if T else [])
        ax.set_title(preset + (f"  ({', '.join(info)})" if info else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if not len(pl) and not len(tk):
            _no_data(ax)
    flat[0].set_ylim(0, max(ymax, 1e-3) * 1.06)
    handles = [Patch(facecolor=colours[d], alpha=0.55, edgecolor=colours[d], label=d) for d in datasets]
    handles.append(Line2D([], [], color="0.3", marker="o", markeredgecolor="black", lw=1.4,
                          label="token-vector entropy (dataset colour)"))
    if any_ref:
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label="log2 T (max entropy)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)
    _finish(fig, path)


def _first_int(a, b, col):
    """First non-null value of col in a, else in b, as int; None when absent."""
    for df in (a, b):
        if col in df.columns and df[col].notna().any():
            return int(df[col].dropna().iloc[0])
    return None


def h_pos_overview(rows, ctx: int, path) -> None:
    """H_pos at the top-activating events of each feature, for context length ctx.

    Left: one box per feature (events as jittered points on top), features sorted by median H_pos,
    coloured by the planted kind when a "kind" column is present. Right: H_pos vs peak activation per
    event, coloured by kind. Both panels mark log2(ctx), the largest possible H_pos. Events with
    status != "ok" or NaN H_pos are left out and counted in the title.

    rows: feature_id, event_idx, H_pos, peak_value, sum_J, status, optional kind.
    """
    plt = _plt()
    ok = _ok_events(rows)
    n_left = len(rows) - len(ok)
    log2c = math.log2(ctx) if ctx and ctx > 0 else None
    has_kind = _has_kind(ok)
    n_feat = int(ok["feature_id"].nunique()) if len(ok) else 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(11.0, 6.0 + 0.12 * n_feat), 4.6),
                                   gridspec_kw=dict(width_ratios=[1.6, 1.0]))
    sub = f"{n_feat} features, {len(ok)} ok events" + (f", {n_left} inactive/NaN events left out" if n_left else "")
    fig.suptitle(f"H_pos at top-activating events, ctx {ctx}\n{sub}", fontsize=11)
    if not len(ok):
        _no_data(ax1, "no data (no event with status ok)")
        _no_data(ax2, "no data")
        fig.tight_layout()
        _finish(fig, path)
        return

    others: dict = {}
    med = ok.groupby("feature_id")["H_pos"].median().sort_values(kind="stable")
    feats = list(med.index)
    fkind = ok.groupby("feature_id")["kind"].agg(_majority) if has_kind else None
    data = [ok.loc[ok["feature_id"] == fid, "H_pos"].astype(float).to_numpy() for fid in feats]
    pos = np.arange(len(feats))
    bp = ax1.boxplot(data, positions=pos, widths=0.65, patch_artist=True, showfliers=False, manage_ticks=False,
                     medianprops=dict(color="black", lw=1.2))
    rng = np.random.default_rng(0)
    for i, (box, fid) in enumerate(zip(bp["boxes"], feats)):
        c = _kind_colour(fkind[fid], others) if has_kind and isinstance(fkind[fid], str) else "tab:blue"
        box.set_facecolor(c)
        box.set_alpha(0.45)
        box.set_edgecolor(c)
        ax1.scatter(i + rng.uniform(-0.18, 0.18, len(data[i])), data[i], s=7, color=c, alpha=0.7,
                    edgecolors="none", zorder=3)
    if log2c is not None:
        ax1.axhline(log2c, color="black", ls="--", lw=1, label=f"log2 ctx = {log2c:.3g}")
    ax1.set_xlim(-0.7, len(feats) - 0.3)
    if len(feats) <= 60:
        ax1.set_xticks(pos)
        ax1.set_xticklabels([str(f) for f in feats], rotation=90, fontsize=6 if len(feats) > 25 else 7)
        ax1.set_xlabel("feature id (sorted by median H_pos)")
    else:
        ax1.set_xticks([])
        ax1.set_xlabel(f"{len(feats)} features, sorted by median H_pos (ids not shown)")
    ax1.set_ylabel("H_pos (bits)")
    ax1.set_title("per feature: events at its top activations", fontsize=9)
    ax1.grid(axis="y", alpha=0.3)

    peak = ok["peak_value"].astype(float).to_numpy()
    h = ok["H_pos"].astype(float).to_numpy()
    fin = np.isfinite(peak)
    if has_kind:
        for k in _kind_order(ok["kind"].dropna()):
            m = ok["kind"].eq(k).fillna(False).to_numpy(dtype=bool) & fin
            ax2.scatter(peak[m], h[m], s=12, alpha=0.7, color=_kind_colour(k, others), edgecolors="none",
                        label=f"{k} ({int(m.sum())})")
        m = ok["kind"].isna().to_numpy() & fin
        if m.any():
            ax2.scatter(peak[m], h[m], s=12, alpha=0.7, color="0.5", edgecolors="none", label=f"unknown ({m.sum()})")
    else:
        ax2.scatter(peak[fin], h[fin], s=12, alpha=0.7, color="tab:blue", edgecolors="none", label="event")
    pf = peak[fin]
    if len(pf) and np.all(pf > 0) and pf.max() / pf.min() > 100:
        ax2.set_xscale("log")
    if log2c is not None:
        ax2.axhline(log2c, color="black", ls="--", lw=1, label=f"log2 ctx = {log2c:.3g}")
    ax2.set_xlabel("peak activation at the event")
    ax2.set_ylabel("H_pos (bits)")
    ax2.set_title("per event", fontsize=9)
    ax2.grid(alpha=0.3)
    ytop = max(float(np.nanmax(h)), log2c or 0.0) * 1.08
    for ax in (ax1, ax2):
        ax.set_ylim(0, max(ytop, 1e-3))
    ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
               title="kind (events)" if has_kind else None, title_fontsize=8)
    fig.tight_layout()
    _finish(fig, path)


def h_pos_vs_ctxlen(rows_by_ctx, path) -> None:
    """H_pos vs context length.

    Each feature is summarised per ctx by the mean H_pos over its ok events; per ctx the median across
    features is drawn with its interquartile band, one line per planted kind when a "kind" column is
    present (else one line for all features), plus the log2(ctx) reference curve. x is log2-scaled with
    ticks at the context lengths.

    rows_by_ctx: ctx, feature_id, event_idx, H_pos, status, optional kind.
    """
    plt = _plt()
    ok = _ok_events(rows_by_ctx)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ax.set_title("H_pos vs context length (median over features, IQR band)", fontsize=10)
    ctxs_all = sorted({int(c) for c in rows_by_ctx["ctx"]}) if len(rows_by_ctx) else []
    if not len(ok):
        if ctxs_all:
            _ref_curve(ax, ctxs_all)
            _log2_xaxis(ax, ctxs_all)
            ax.set_ylim(0, max(math.log2(max(ctxs_all)), 1.0) * 1.08)
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("H_pos (bits)")
        ax.text(0.5, 0.5, "no data (no event with status ok)", transform=ax.transAxes, ha="center",
                va="center", color="0.35", bbox=dict(boxstyle="round", facecolor="0.95", edgecolor="0.7"))
        if not ctxs_all:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        _finish(fig, path)
        return

    has_kind = _has_kind(ok)
    per = ok.groupby(["ctx", "feature_id"], sort=True)["H_pos"].mean().rename("H").reset_index()
    if has_kind:
        kinds = ok.groupby(["ctx", "feature_id"], sort=True)["kind"].agg(_majority).rename("kind").reset_index()
        per = per.merge(kinds, on=["ctx", "feature_id"])
        groups = [(k, per[per["kind"].eq(k).fillna(False).to_numpy(dtype=bool)])
                  for k in _kind_order(per["kind"].dropna())]
    else:
        groups = [("all features", per)]
    others: dict = {}
    for label, g in groups:
        s = g.groupby("ctx", sort=True)["H"]
        q = s.quantile([0.25, 0.5, 0.75]).unstack()
        nf = s.size()
        c = _kind_colour(label, others) if has_kind else "tab:blue"
        x = q.index.to_numpy(dtype=float)
        ax.fill_between(x, q[0.25], q[0.75], color=c, alpha=0.18, lw=0)
        ax.plot(x, q[0.5], "o-", color=c, lw=1.8, ms=4,
                label=f"{label} (n = {int(nf.min())}" + (f"-{int(nf.max())}" if nf.max() != nf.min() else "")
                + " features)")
    _ref_curve(ax, ctxs_all)
    _log2_xaxis(ax, ctxs_all)
    ax.set_ylim(0, math.log2(max(ctxs_all)) * 1.08)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("H_pos (bits)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    _finish(fig, path)


def _ref_curve(ax, ctxs, label: str = "log2 ctx (max H_pos)") -> None:
    ctxs = sorted(ctxs)
    if len(ctxs) >= 2:
        xs = np.geomspace(ctxs[0], ctxs[-1], 50)
    else:
        xs = np.array(ctxs, dtype=float)
    ax.plot(xs, np.log2(xs), ls="--", color="black", lw=1, label=label,
            marker=None if len(xs) > 1 else "_", ms=12)


def ctxlen_sweep_figure(sweep, token, path, title: str) -> None:
    """Context-length sweep: one panel per layer (up to 6 per row). Per context length L, the median
    per-latent entropy across latents active at the fixed query token, with its interquartile band; the
    token-vector entropy; and the log2 L reference curve (maximum entropy). x is log2-scaled when the
    lengths span a factor of 8 or more, linear otherwise.

    sweep: layer, ctx_len, feature_id, entropy (duplicates of (layer, ctx_len, feature_id) are averaged).
    token: layer, ctx_len, token_vector_entropy.
    """
    plt = _plt()
    s = sweep[np.isfinite(sweep["entropy"].astype(float))] if len(sweep) else sweep
    layers = sorted({int(x) for x in s["layer"]} | {int(x) for x in token["layer"]}) if (
        len(s) or len(token)) else []
    n = max(1, len(layers))
    ncols = min(n, 6)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.6, 3.3 * nrows + 0.9), squeeze=False,
                             sharey=True, layout="constrained")
    fig.suptitle(title, fontsize=11)
    flat = axes.ravel()
    for ax in flat[len(layers):]:
        ax.set_visible(False)
    if not layers:
        flat[0].set_visible(True)
        _no_data(flat[0])
        _finish(fig, path)
        return
    lens = sorted({int(x) for x in s["ctx_len"]} | {int(x) for x in token["ctx_len"]})
    logx = lens[0] > 0 and lens[-1] / lens[0] >= 8
    for ax, layer in zip(flat, layers):
        g = s[s["layer"] == layer]
        if len(g):
            per = g.groupby(["ctx_len", "feature_id"], sort=True)["entropy"].mean()
            q = per.groupby(level="ctx_len").quantile([0.25, 0.5, 0.75]).unstack()
            x = q.index.to_numpy(dtype=float)
            ax.fill_between(x, q[0.25], q[0.75], color="tab:blue", alpha=0.2, lw=0, label="per-latent entropy, IQR")
            ax.plot(x, q[0.5], "o-", color="tab:blue", ms=3.5, lw=1.6, label="per-latent entropy, median")
            nlat = int(g["feature_id"].nunique())
        else:
            nlat = 0
        t = token[token["layer"] == layer]
        if len(t):
            tt = t.groupby("ctx_len", sort=True)["token_vector_entropy"].mean().dropna()
            ax.plot(tt.index.to_numpy(dtype=float), tt.to_numpy(), "s-", color="tab:green", ms=3.5, lw=1.6,
                    label="token-vector entropy")
        xs = np.geomspace(lens[0], lens[-1], 60) if logx else np.linspace(max(lens[0], 1), lens[-1], 60)
        ax.plot(xs, np.log2(xs), "--", color="black", lw=1, label="log2 L (max entropy)",
                marker="_" if len(lens) == 1 else None, ms=12)
        if logx:
            _log2_xaxis(ax, lens)
        ax.set_title(f"layer {layer}  ({nlat} latents)", fontsize=9)
        ax.grid(alpha=0.3)
        if not len(g) and not len(t):
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="0.35")
    flat[0].set_ylim(0, math.log2(max(lens[-1], 2)) * 1.08)
    for ax in axes[:, 0]:
        ax.set_ylabel("entropy (bits)")
    for ax in flat[:len(layers)]:
        ax.set_xlabel("context length L (tokens)", fontsize=9)
    handles, labels = [], []
    for ax in flat[:len(layers)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    _finish(fig, path)


def ground_truth_figure(rows, path, stats: dict) -> None:
    """Planted ground truth: mean H_pos per latent, one box (with the latents as jittered points) per kind
    in the order echo, topic, filler (then any other kinds, e.g. "other"), n per kind in the tick labels.
    The statistics in ``stats`` are printed in a text box beside the axes: scalars one per line (e.g.
    mann_whitney_p, n_echo, median_echo), dicts keyed by kind on one line each (as locality.kind_contrast
    returns: n_latents, median_H_pos); lists are skipped. mann_whitney_p also goes into the title. A "ctx"
    entry, if present, draws the log2(ctx) reference.

    rows: feature_id, kind (the latent's majority kind), mean_H_pos.
    """
    plt = _plt()
    stats = dict(stats or {})
    r = rows[np.isfinite(rows["mean_H_pos"].astype(float)) & rows["kind"].notna()] if len(rows) else rows
    n_kinds = int(r["kind"].nunique()) if len(r) else 3
    stext = _stats_text(stats)
    fig, (ax, tax) = plt.subplots(1, 2, figsize=(max(5.0, 1.3 * n_kinds + 1.6) + (2.3 if stext else 0.3), 4.6),
                                  gridspec_kw=dict(width_ratios=[max(5.0, 1.3 * n_kinds + 1.6),
                                                                 2.3 if stext else 0.3]))
    tax.axis("off")
    title = "Planted ground truth: mean H_pos per latent, by kind"
    p = stats.get("mann_whitney_p")
    if isinstance(p, (int, float, np.floating)) and np.isfinite(p):
        title += f"\nMann-Whitney U, echo vs topic latents: p = {float(p):.2g}"
    ax.set_title(title, fontsize=10)
    if stext:
        tax.text(0.0, 1.0, stext, transform=tax.transAxes, ha="left", va="top", fontsize=8,
                 family="monospace", bbox=dict(boxstyle="round", facecolor="0.96", edgecolor="0.7"))
    if not len(r):
        _no_data(ax, "no data (no latent with a kind and a finite H_pos)")
        fig.tight_layout()
        _finish(fig, path)
        return
    r = r.assign(kind=r["kind"].astype(str))
    kinds = _kind_order(r["kind"])
    others: dict = {}
    data = [r.loc[r["kind"].astype(str) == k, "mean_H_pos"].astype(float).to_numpy() for k in kinds]
    pos = np.arange(len(kinds))
    bp = ax.boxplot(data, positions=pos, widths=0.55, patch_artist=True, showfliers=False, manage_ticks=False,
                    medianprops=dict(color="black", lw=1.5))
    rng = np.random.default_rng(0)
    for i, (box, k) in enumerate(zip(bp["boxes"], kinds)):
        c = _kind_colour(k, others)
        box.set_facecolor(c)
        box.set_alpha(0.35)
        box.set_edgecolor(c)
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(data[i])), data[i], s=18, color=c, alpha=0.8,
                   edgecolors="white", linewidths=0.4, zorder=3)
    ymax = max(float(np.max(np.concatenate(data))), 1e-3)
    ctx = stats.get("ctx")
    if isinstance(ctx, (int, np.integer)) and ctx > 0:
        ax.axhline(math.log2(ctx), color="black", ls="--", lw=1)
        ax.text(len(kinds) - 0.45, math.log2(ctx), f"log2 ctx = {math.log2(ctx):.3g} (max)", ha="right",
                va="bottom", fontsize=8)
        ymax = max(ymax, math.log2(ctx))
    ax.set_xticks(pos)
    ax.set_xticklabels([f"{k}\n(n = {len(d)})" for k, d in zip(kinds, data)], fontsize=9)
    ax.set_xlim(-0.6, len(kinds) - 0.4)
    ax.set_ylim(0, ymax * 1.1)
    ax.set_xlabel("planted kind (latent's majority)")
    ax.set_ylabel("mean H_pos over events (bits)")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    _finish(fig, path)
