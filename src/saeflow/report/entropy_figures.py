"""Figures of entropy vs depth: per preset and dataset, per layer, the cross-model grid, and the
context-length sweep (saeflow.evals.locality).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from saeflow.report.plotting import (
    GRID_KINDS,
    boxes,
    finish,
    finite,
    first_int,
    layer_ticks,
    log2_xaxis,
    no_data,
    pyplot,
    spacing,
    violins,
)


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
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    f = features[np.isfinite(features["entropy"].astype(float))] if len(features) else features
    layers = sorted({int(x) for x in f["layer"]} | {int(x) for x in windows["layer"]}) if (
        len(f) or len(windows)) else []
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(layers) + 3.5), 4.6))
    ax.set_title(title, fontsize=10)
    if not layers:
        no_data(ax, "no data (no active latents, no windows)")
        finish(fig, path)
        return

    width = 0.7 * spacing(layers)
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
        violins(ax, data, layers, width, "tab:blue")
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

    layer_ticks(ax, layers, [f"{l}\nn={counts.get(l, 0)}" for l in layers], max_labels=40,
                 fontsize=8 if len(layers) <= 14 else 7)
    ax.set_xlim(layers[0] - width, layers[-1] + width)
    ax.set_ylim(0, max(ymax, 1e-3) * 1.06)
    ax.set_xlabel("layer  (n = distinct active latents)")
    ax.set_ylabel("entropy (bits)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    finish(fig, path)


def layer_entropy_plots(features, windows, layer: int, out_dir) -> None:
    """Three diagnostics for one layer, written into out_dir (created):

    entropy_hist.png: histogram of the per-(window, latent) entropies, with the mean token-vector entropy
    over windows marked; entropy_vs_activation.png: entropy vs activation scatter (log x when every
    activation is positive) with the binned median; num_active_hist.png: histogram of the number of active
    latents per window, mean marked.
    """
    plt = pyplot()
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    f = features[features["layer"] == layer] if len(features) else features
    f = f[np.isfinite(f["entropy"].astype(float))] if len(f) else f
    w = windows[windows["layer"] == layer] if len(windows) else windows
    n_win = int(w["window_idx"].nunique()) if len(w) else (int(f["window_idx"].nunique()) if len(f) else 0)
    tok = finite(w["token_vector_entropy"]) if len(w) else np.array([])

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
        no_data(ax, f"no active latents at layer {layer}")
    fig.tight_layout()
    finish(fig, out_dir / "entropy_hist.png")

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
        no_data(ax, f"no active latents at layer {layer}")
    fig.tight_layout()
    finish(fig, out_dir / "entropy_vs_activation.png")

    # number of active latents per window
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    ax.set_title(f"Layer {layer}: active latents per window ({len(w)} windows)", fontsize=10)
    nact = finite(w["num_active_features"]) if len(w) else np.array([])
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
        no_data(ax, f"no windows at layer {layer}")
    fig.tight_layout()
    finish(fig, out_dir / "num_active_hist.png")


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
    plt = pyplot()
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    ctx_len = ctx_len or {}
    presets = sorted({str(p) for p in per_latent["preset"]} | {str(p) for p in token["preset"]}) if (
        len(per_latent) or len(token)) else []
    datasets = sorted({str(d) for d in per_latent["dataset"]} | {str(d) for d in token["dataset"]}) if presets else []
    n_layers = {p: first_int(per_latent[per_latent["preset"].astype(str) == p],
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
        no_data(flat[0])
        finish(fig, path)
        return

    colours = {d: plt.get_cmap("tab10")(i % 10) for i, d in enumerate(datasets)}
    ymax = 0.0
    any_ref = False
    for ax, preset in zip(flat, presets):
        pl = per_latent[per_latent["preset"].astype(str) == preset]
        tk = token[token["preset"].astype(str) == preset]
        layers = sorted({int(x) for x in pl["layer"]} | {int(x) for x in tk["layer"]})
        nl = n_layers[preset]
        sp = spacing(layers)
        width = 0.8 * sp / max(1, len(datasets))
        for i, d in enumerate(datasets):
            off = width * (i - (len(datasets) - 1) / 2)
            pd_ = pl[pl["dataset"].astype(str) == d]
            if len(pd_):
                data = [pd_.loc[pd_["layer"] == l, "mean_entropy"].to_numpy() for l in layers]
                pos = [l + off for l in layers]
                if kind == "violin":
                    violins(ax, data, pos, width * 0.95, colours[d])
                else:
                    boxes(ax, data, pos, width * 0.8, colours[d])
                fin = finite(pd_["mean_entropy"])
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
        layer_ticks(ax, layers, max_labels=14)
        ax.set_xlim(layers[0] - 0.5 * sp, layers[-1] + 0.5 * sp)
        ax.set_xlabel("layer")
        info = ([f"{nl} layers"] if nl is not None else []) + ([f"T = {T}"] if T else [])
        ax.set_title(preset + (f"  ({', '.join(info)})" if info else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if not len(pl) and not len(tk):
            no_data(ax)
    flat[0].set_ylim(0, max(ymax, 1e-3) * 1.06)
    handles = [Patch(facecolor=colours[d], alpha=0.55, edgecolor=colours[d], label=d) for d in datasets]
    handles.append(Line2D([], [], color="0.3", marker="o", markeredgecolor="black", lw=1.4,
                          label="token-vector entropy (dataset colour)"))
    if any_ref:
        handles.append(Line2D([], [], color="black", ls="--", lw=1, label="log2 T (max entropy)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=8,
               frameon=False)
    finish(fig, path)


def ctxlen_sweep_figure(sweep, token, path, title: str) -> None:
    """Context-length sweep: one panel per layer (up to 6 per row). Per context length L, the median
    per-latent entropy across latents active at the fixed query token, with its interquartile band; the
    token-vector entropy; and the log2 L reference curve (maximum entropy). x is log2-scaled when the
    lengths span a factor of 8 or more, linear otherwise.

    sweep: layer, ctx_len, feature_id, entropy (duplicates of (layer, ctx_len, feature_id) are averaged).
    token: layer, ctx_len, token_vector_entropy.
    """
    plt = pyplot()
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
        no_data(flat[0])
        finish(fig, path)
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
            log2_xaxis(ax, lens)
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
    finish(fig, path)
