"""Figures of H_pos: per-latent overview, H_pos vs context length, planted ground truth.
"""

from __future__ import annotations

import math

import numpy as np

from saeflow.report.plotting import (
    finish,
    has_kinds,
    kind_colour,
    kind_order,
    log2_xaxis,
    majority,
    no_data,
    ok_events,
    pyplot,
    ref_curve,
    stats_text,
)


def h_pos_overview(rows, ctx: int, path) -> None:
    """H_pos at the top-activating events of each feature, for context length ctx.

    Left: one box per feature (events as jittered points on top), features sorted by median H_pos,
    coloured by the planted kind when a "kind" column is present. Right: H_pos vs peak activation per
    event, coloured by kind. Both panels mark log2(ctx), the largest possible H_pos. Events with
    status != "ok" or NaN H_pos are left out and counted in the title.

    rows: feature_id, event_idx, H_pos, peak_value, sum_J, status, optional kind.
    """
    plt = pyplot()
    ok = ok_events(rows)
    n_left = len(rows) - len(ok)
    log2c = math.log2(ctx) if ctx and ctx > 0 else None
    kinds_known = has_kinds(ok)
    n_feat = int(ok["feature_id"].nunique()) if len(ok) else 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(max(11.0, 6.0 + 0.12 * n_feat), 4.6),
                                   gridspec_kw=dict(width_ratios=[1.6, 1.0]))
    sub = f"{n_feat} features, {len(ok)} ok events" + (f", {n_left} inactive/NaN events left out" if n_left else "")
    fig.suptitle(f"H_pos at top-activating events, ctx {ctx}\n{sub}", fontsize=11)
    if not len(ok):
        no_data(ax1, "no data (no event with status ok)")
        no_data(ax2, "no data")
        fig.tight_layout()
        finish(fig, path)
        return

    others: dict = {}
    med = ok.groupby("feature_id")["H_pos"].median().sort_values(kind="stable")
    feats = list(med.index)
    fkind = ok.groupby("feature_id")["kind"].agg(majority) if kinds_known else None
    data = [ok.loc[ok["feature_id"] == fid, "H_pos"].astype(float).to_numpy() for fid in feats]
    pos = np.arange(len(feats))
    bp = ax1.boxplot(data, positions=pos, widths=0.65, patch_artist=True, showfliers=False, manage_ticks=False,
                     medianprops=dict(color="black", lw=1.2))
    rng = np.random.default_rng(0)
    for i, (box, fid) in enumerate(zip(bp["boxes"], feats)):
        c = kind_colour(fkind[fid], others) if kinds_known and isinstance(fkind[fid], str) else "tab:blue"
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
    if kinds_known:
        for k in kind_order(ok["kind"].dropna()):
            m = ok["kind"].eq(k).fillna(False).to_numpy(dtype=bool) & fin
            ax2.scatter(peak[m], h[m], s=12, alpha=0.7, color=kind_colour(k, others), edgecolors="none",
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
               title="kind (events)" if kinds_known else None, title_fontsize=8)
    fig.tight_layout()
    finish(fig, path)


def h_pos_vs_ctxlen(rows_by_ctx, path) -> None:
    """H_pos vs context length.

    Each feature is summarised per ctx by the mean H_pos over its ok events; per ctx the median across
    features is drawn with its interquartile band, one line per planted kind when a "kind" column is
    present (else one line for all features), plus the log2(ctx) reference curve. x is log2-scaled with
    ticks at the context lengths.

    rows_by_ctx: ctx, feature_id, event_idx, H_pos, status, optional kind.
    """
    plt = pyplot()
    ok = ok_events(rows_by_ctx)
    fig, ax = plt.subplots(figsize=(6.8, 4.4))
    ax.set_title("H_pos vs context length (median over features, IQR band)", fontsize=10)
    ctxs_all = sorted({int(c) for c in rows_by_ctx["ctx"]}) if len(rows_by_ctx) else []
    if not len(ok):
        if ctxs_all:
            ref_curve(ax, ctxs_all)
            log2_xaxis(ax, ctxs_all)
            ax.set_ylim(0, max(math.log2(max(ctxs_all)), 1.0) * 1.08)
            ax.set_xlabel("context length (tokens)")
            ax.set_ylabel("H_pos (bits)")
        ax.text(0.5, 0.5, "no data (no event with status ok)", transform=ax.transAxes, ha="center",
                va="center", color="0.35", bbox=dict(boxstyle="round", facecolor="0.95", edgecolor="0.7"))
        if not ctxs_all:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        finish(fig, path)
        return

    kinds_known = has_kinds(ok)
    per = ok.groupby(["ctx", "feature_id"], sort=True)["H_pos"].mean().rename("H").reset_index()
    if kinds_known:
        kinds = ok.groupby(["ctx", "feature_id"], sort=True)["kind"].agg(majority).rename("kind").reset_index()
        per = per.merge(kinds, on=["ctx", "feature_id"])
        groups = [(k, per[per["kind"].eq(k).fillna(False).to_numpy(dtype=bool)])
                  for k in kind_order(per["kind"].dropna())]
    else:
        groups = [("all features", per)]
    others: dict = {}
    for label, g in groups:
        s = g.groupby("ctx", sort=True)["H"]
        q = s.quantile([0.25, 0.5, 0.75]).unstack()
        nf = s.size()
        c = kind_colour(label, others) if kinds_known else "tab:blue"
        x = q.index.to_numpy(dtype=float)
        ax.fill_between(x, q[0.25], q[0.75], color=c, alpha=0.18, lw=0)
        ax.plot(x, q[0.5], "o-", color=c, lw=1.8, ms=4,
                label=f"{label} (n = {int(nf.min())}" + (f"-{int(nf.max())}" if nf.max() != nf.min() else "")
                + " features)")
    ref_curve(ax, ctxs_all)
    log2_xaxis(ax, ctxs_all)
    ax.set_ylim(0, math.log2(max(ctxs_all)) * 1.08)
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("H_pos (bits)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    finish(fig, path)


def ground_truth_figure(rows, path, stats: dict) -> None:
    """Planted ground truth: mean H_pos per latent, one box (with the latents as jittered points) per kind
    in the order echo, topic, filler (then any other kinds, e.g. "other"), n per kind in the tick labels.
    The statistics in ``stats`` are printed in a text box beside the axes: scalars one per line (e.g.
    mann_whitney_p, n_echo, median_echo), dicts keyed by kind on one line each (as locality.kind_contrast
    returns: n_latents, median_H_pos); lists are skipped. mann_whitney_p also goes into the title. A "ctx"
    entry, if present, draws the log2(ctx) reference.

    rows: feature_id, kind (the latent's majority kind), mean_H_pos.
    """
    plt = pyplot()
    stats = dict(stats or {})
    r = rows[np.isfinite(rows["mean_H_pos"].astype(float)) & rows["kind"].notna()] if len(rows) else rows
    n_kinds = int(r["kind"].nunique()) if len(r) else 3
    stext = stats_text(stats)
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
        no_data(ax, "no data (no latent with a kind and a finite H_pos)")
        fig.tight_layout()
        finish(fig, path)
        return
    r = r.assign(kind=r["kind"].astype(str))
    kinds = kind_order(r["kind"])
    others: dict = {}
    data = [r.loc[r["kind"].astype(str) == k, "mean_H_pos"].astype(float).to_numpy() for k in kinds]
    pos = np.arange(len(kinds))
    bp = ax.boxplot(data, positions=pos, widths=0.55, patch_artist=True, showfliers=False, manage_ticks=False,
                    medianprops=dict(color="black", lw=1.5))
    rng = np.random.default_rng(0)
    for i, (box, k) in enumerate(zip(bp["boxes"], kinds)):
        c = kind_colour(k, others)
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
    finish(fig, path)
