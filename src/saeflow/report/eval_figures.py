"""Figures of the other evals: sparse probing and SAEBench probing (accuracy vs k, SAE vs residual baseline), activation
autocorrelation (median curve, 10-90% band, examples; autocorrelation length vs H_pos) and decoder geometry
(cosine vs |dH|, permutation null). Each takes tidy tables and a path and writes the PNG atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from saeflow.evals.autocorr import autocorr_length
from saeflow.evals.probe import wilson_interval
from saeflow.report.plotting import save


def _k_positions(ks_column) -> tuple[list[str], dict[str, int]]:
    """The categorical x axis of accuracy-vs-k figures: the ks in increasing order, then "all"."""
    ks = sorted({str(k) for k in ks_column}, key=lambda s: (s == "all", int(s) if s != "all" else 0))
    return ks, {k: i for i, k in enumerate(ks)}


def _accuracy_errorbar(ax, x, acc, n_test, **kw) -> None:
    """Accuracies at x with their 95% Wilson intervals from (acc, n_test) as error bars."""
    acc = np.asarray(acc, dtype=float)
    ci = np.array([wilson_interval(a, n) for a, n in zip(acc, n_test)])
    yerr = np.vstack([acc - ci[:, 0], ci[:, 1] - acc]).clip(min=0)
    ax.errorbar(x, acc, yerr=yerr, ms=4, capsize=3, **kw)


def probe_figure(df_by_task, path, title: str) -> None:
    """Accuracy vs k (categorical x: ks then "all") per task: SAE solid, raw baseline dashed, same colour per
    task; error bars are 95% Wilson intervals of each accuracy from (acc, n_test). Saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    need = {"task", "k", "acc_sae", "acc_raw", "n_test"}
    if need - set(df_by_task.columns):
        raise ValueError(f"df_by_task: missing columns {sorted(need - set(df_by_task.columns))}")
    ks, pos = _k_positions(df_by_task["k"])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (task, g) in enumerate(df_by_task.groupby("task", sort=True)):
        g = g.assign(k=g["k"].astype(str)).sort_values("k", key=lambda s: s.map(pos))
        x = g["k"].map(pos).to_numpy(dtype=float)
        col = colors[i % len(colors)]
        for which, ls, dx, lab in (("acc_sae", "-", -0.04, "SAE"), ("acc_raw", "--", 0.04, "raw")):
            _accuracy_errorbar(ax, x + dx, g[which], g["n_test"], color=col, ls=ls,
                               marker="o" if which == "acc_sae" else "s", label=f"{task} ({lab})")
    ax.set_xticks(range(len(ks)), ks)
    ax.set_xlabel("k (probed dimensions)")
    ax.set_ylabel("test accuracy")
    lowest = float(np.nanmin(df_by_task[["acc_sae", "acc_raw"]].to_numpy(dtype=float)))
    ax.set_ylim(min(0.4, lowest - 0.08), 1.02)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    # Below the axes: with several layers and dictionaries an inside legend hides the curves.
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    save(fig, path)
    plt.close(fig)


def saebench_figure(df, path, title: str) -> None:
    """SAEBench probing, one panel per (task, layer): accuracy (mean over classes) vs k, each dictionary's codes
    solid in its own colour, the site's activations ("raw") dashed black, drawn once where the dictionaries of a
    panel read the same site (identical raw accuracies) and once per dictionary otherwise; error bars are 95%
    Wilson intervals from (acc, n_test). df: task, layer, dictionary, k, acc_sae, acc_raw, n_test. Saved
    atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    need = {"task", "layer", "dictionary", "k", "acc_sae", "acc_raw", "n_test"}
    if need - set(df.columns):
        raise ValueError(f"df: missing columns {sorted(need - set(df.columns))}")
    ks, pos = _k_positions(df["k"])
    panels = list(df.groupby(["task", "layer"], sort=True))
    ncol = min(len(panels), 2)
    nrow = -(-len(panels) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow + 0.6), squeeze=False, sharey=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    dicts = sorted(set(df["dictionary"]))
    lowest = float(np.nanmin(df[["acc_sae", "acc_raw"]].to_numpy(dtype=float)))

    def curve(ax, g, which, dx, **kw):
        _accuracy_errorbar(ax, g["k"].map(pos).to_numpy(dtype=float) + dx, g[which], g["n_test"], **kw)

    for ax, ((task, layer), p) in zip(axes.flat, panels):
        p = p.assign(k=p["k"].astype(str))
        raws = {}
        for d, g in p.groupby("dictionary", sort=True):
            g = g.sort_values("k", key=lambda s: s.map(pos))
            curve(ax, g, "acc_sae", dx=-0.05, color=colors[dicts.index(d) % len(colors)], marker="o", label=d)
            raws.setdefault(tuple(np.round(g["acc_raw"].to_numpy(dtype=float), 12)), []).append((d, g))
        for shared in raws.values():
            label = "raw" if len(raws) == 1 else f"raw ({', '.join(d for d, _ in shared)})"
            curve(ax, shared[0][1], "acc_raw", dx=0.05, color="black", ls="--", marker="s", label=label)
        ax.set_xticks(range(len(ks)), ks)
        ax.set_title(f"{task}, layer {layer}", fontsize=10)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax.set_ylim(min(0.4, lowest - 0.08), 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    for ax in axes[-1]:
        ax.set_xlabel("k (probed dimensions)")
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def autocorr_figure(rho: np.ndarray, latents, path, title: str, n_examples: int = 5) -> None:
    """rho_a(tau) vs lag tau over the selected latents (rows `latents` of the full rho matrix): median curve
    and 10-90% quantile band (NaN rows dropped), 1/e reference line, and n_examples example latents chosen
    evenly across the range of autocorrelation lengths. 'no data' note when nothing finite is left."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latents = np.asarray(latents, dtype=np.int64).reshape(-1)
    rho = np.asarray(rho, dtype=np.float64)
    r = rho[latents] if latents.size else np.zeros((0, rho.shape[1] if rho.ndim == 2 else 1))
    keep = np.all(np.isfinite(r), axis=1)
    r, lat = r[keep], latents[keep]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if r.shape[0] == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=14)
    else:
        lags = np.arange(r.shape[1])
        q10, q50, q90 = np.quantile(r, [0.1, 0.5, 0.9], axis=0)
        ax.fill_between(lags, q10, q90, color="C0", alpha=0.25, label="10-90% of latents")
        ax.plot(lags, q50, color="C0", lw=2.5, label=f"median (n={r.shape[0]})")
        ell = autocorr_length(r)
        order = np.argsort(np.where(np.isfinite(ell), ell, np.inf), kind="stable")
        m = min(int(n_examples), r.shape[0])
        picks = order[np.unique(np.linspace(0, r.shape[0] - 1, m).round().astype(int))] if m > 0 else []
        for j, i in enumerate(picks):
            lab = f"latent {lat[i]}" + (f" (ell={ell[i]:.1f})" if np.isfinite(ell[i]) else "")
            ax.plot(lags, r[i], lw=1, ls="--", color=f"C{j + 1}", label=lab)
        ax.axhline(np.exp(-1), color="grey", lw=0.8, ls=":", label="1/e")
        ax.axhline(0, color="black", lw=0.6)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xlabel("lag tau (tokens)")
    ax.set_ylabel("rho(tau)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save(fig, Path(path))
    plt.close(fig)


def autocorr_vs_entropy_figure(summary: pd.DataFrame, path, title: str) -> None:
    """Scatter of autocorr_length vs mean_H_pos per feature (rows with both finite), Spearman rank
    correlation (scipy.stats.spearmanr) and n in the title; 'no data' note if no such rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import spearmanr

    fig, ax = plt.subplots(figsize=(6, 4.5))
    d = pd.DataFrame(columns=["autocorr_length", "mean_H_pos"])
    if {"autocorr_length", "mean_H_pos"} <= set(summary.columns):
        d = summary[["autocorr_length", "mean_H_pos"]].astype(float)
        d = d[np.isfinite(d).all(axis=1)]
    if len(d) == 0:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, fontsize=14)
        full = title
    else:
        ax.scatter(d["autocorr_length"], d["mean_H_pos"], s=22, alpha=0.75, edgecolor="k", lw=0.3)
        if len(d) >= 3:
            s = spearmanr(d["autocorr_length"], d["mean_H_pos"])
            full = f"{title}\nSpearman rho = {s.statistic:.3f} (p = {s.pvalue:.2g}, n = {len(d)})"
        else:
            full = f"{title}\nSpearman rho: n/a (n = {len(d)})"
    ax.set_xlabel("autocorrelation length (tokens, rho < 1/e)")
    ax.set_ylabel("mean H_pos")
    ax.set_title(full, fontsize=10)
    ax.grid(alpha=0.3)
    save(fig, Path(path))
    plt.close(fig)


def geometry_figure(pairwise: pd.DataFrame, summary: dict, path, title: str) -> None:
    """Left: decoder cosine vs |dH| per pair (scatter; hexbin when > 5000 pairs) with the mean cos in 20
    equal-count |dH| bins. Right: histogram of the null Spearman rho (summary["null"]["spearman_samples"])
    with the observed rho and the 2.5/97.5 % null quantiles marked. Saved atomically (figures._save)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for col in ("cos", "abs_dH"):
        if col not in pairwise.columns:
            raise ValueError(f"pairwise must have a '{col}' column")
    x = pairwise["abs_dH"].to_numpy(float)
    y = pairwise["cos"].to_numpy(float)
    fig, (ax, axn) = plt.subplots(1, 2, figsize=(11, 4.3), gridspec_kw={"width_ratios": [1.6, 1]})
    if len(x) > 5000:
        hb = ax.hexbin(x, y, gridsize=60, bins="log", cmap="viridis", mincnt=1)
        fig.colorbar(hb, ax=ax, label="pairs (log)")
    else:
        ax.scatter(x, y, s=6, alpha=0.35, color="tab:blue", lw=0, label="pairs")
    nb = int(min(20, max(2, len(x) // 10)))
    edges = np.unique(np.quantile(x, np.linspace(0, 1, nb + 1)))
    if len(edges) > 1:
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        g = pd.DataFrame({"b": idx, "x": x, "y": y}).groupby("b").mean()
        ax.plot(g["x"], g["y"], "-o", color="tab:red", ms=3, lw=1.5, label="binned mean")
    ax.axhline(0, color="grey", lw=0.6, ls=":")
    sp = summary.get("spearman", {})
    nul = summary.get("null", {})
    ax.set_xlabel("|H_a - H_b|")
    ax.set_ylabel("decoder cosine")
    ax.set_title(f"n={summary.get('n_features')} latents, {summary.get('n_pairs')} pairs; "
                 f"Spearman {sp.get('rho', float('nan')):.3f}, Pearson "
                 f"{summary.get('pearson', {}).get('r', float('nan')):.3f}", fontsize=9)
    ax.legend(fontsize=8, loc="upper right")

    samples = np.asarray(nul.get("spearman_samples", []), float)
    rho = sp.get("rho", np.nan)
    if samples.size:
        axn.hist(samples, bins=40, color="lightgrey", edgecolor="grey")
    q = nul.get("spearman_quantiles", {})
    for k in ("0.025", "0.975"):
        if k in q:
            axn.axvline(q[k], color="grey", ls="--", lw=1)
    axn.axvline(rho, color="tab:red", lw=2, label=f"observed {rho:.3f}")
    axn.set_xlabel("Spearman rho under H permutation")
    axn.set_ylabel("permutations")
    axn.set_title(f"null (n={nul.get('n_permutations', samples.size)}), "
                  f"p_perm={nul.get('p_perm_spearman', float('nan')):.3g}", fontsize=9)
    axn.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, Path(path))
    plt.close(fig)


STEER_COLOURS = {"latent": "C0", "diff_of_means": "C1", "random_vector": "0.45", "random_latent": "C4"}


def steering_figure(table: pd.DataFrame, summary: dict, path, title: str) -> None:
    """Steering (saeflow.evals.steering; seed 002's interference_all_compare): concept success, perplexity
    of the continuation under the clean model (with the fluency cap) and last-token logit margin vs alpha
    (multiples of the site's RMS norm), one line per direction with its 95% bootstrap band; and each
    direction's effect at its best fluency-preserving alpha (success minus baseline on the held-out prompts)
    with its CI. Saved atomically."""
    from saeflow.report.plotting import finish, pyplot

    need = {"direction", "alpha", "metric", "value", "lo", "hi"}
    if need - set(table.columns):
        raise ValueError(f"steering table: missing columns {sorted(need - set(table.columns))}")
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    panels = (("success", "concept success"), ("perplexity", "perplexity (clean model)"),
              ("logit_margin", "last-token logit margin"))
    for ax, (metric, ylabel) in zip(axes.flat, panels):
        for d, g in table[table["metric"] == metric].groupby("direction", sort=False):
            g = g.sort_values("alpha")
            col = STEER_COLOURS.get(d, None)
            ax.plot(g["alpha"], g["value"], marker="o", ms=3, color=col, label=d)
            ax.fill_between(g["alpha"], g["lo"], g["hi"], color=col, alpha=0.18, lw=0)
        if metric == "perplexity":
            cap = summary["fluency_cap"] * summary["baseline_perplexity"]
            ax.axhline(cap, color="red", ls="--", lw=1, label=f"fluency cap ({summary['fluency_cap']:g}x baseline)")
            ax.set_yscale("log")
        ax.axvline(0, color="grey", lw=0.7, ls=":")
        ax.set_xlabel("alpha (x site RMS norm)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    axes[0, 1].legend(fontsize=8)
    ax = axes[1, 1]
    dirs = list(summary["directions"])
    eff = np.array([summary["directions"][d]["effect"] for d in dirs])
    lo = np.array([summary["directions"][d]["effect_lo"] for d in dirs])
    hi = np.array([summary["directions"][d]["effect_hi"] for d in dirs])
    ax.bar(range(len(dirs)), eff, color=[STEER_COLOURS.get(d, "C2") for d in dirs], alpha=0.8)
    ax.errorbar(range(len(dirs)), eff, yerr=np.vstack([eff - lo, hi - eff]).clip(min=0), fmt="none", ecolor="k",
                capsize=4)
    labels = [f"{d}\nalpha={summary['directions'][d]['best_alpha']:g}"
              + ("" if summary["directions"][d]["fluency_ok"] else "\n(no fluent alpha)") for d in dirs]
    ax.set_xticks(range(len(dirs)), labels, fontsize=8)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("effect on success (held-out prompts, 95% CI)")
    h = summary["head_to_head"]
    ax.set_title(f"latent - diff of means: {h['latent_minus_diff_of_means']:+.3f} [{h['lo']:+.3f}, {h['hi']:+.3f}]",
                 fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    c = summary["contrast"]
    fig.suptitle(f"{title}\n{c['positive']} vs {c['negative']}; success: {c['success']}; prompts: "
                 f"{summary['calibration']['chosen']} (n={summary['n_prompts']} x {summary['n_samples']})", fontsize=10)
    fig.tight_layout()
    finish(fig, path)


def circuit_figure(table: pd.DataFrame, ablation: pd.DataFrame, path, title: str) -> None:
    """Circuit faithfulness (saeflow.evals.circuit; seed 000's circuit-g2-sae / circuit-multilayer) and its
    ablation (saeflow.evals.ablation): probe accuracy vs circuit size K per layer, the circuit against the
    mean of same-size random latent sets (5-95% band of the draws) and the all-latents ceiling; the build-up
    curve over the first j layers at the largest K; and per (layer, K) the ablation's margin drop against
    its seeded null sets. Saved atomically."""
    from saeflow.report.plotting import finish, pyplot

    need = {"scope", "layers", "n_layers", "k", "acc_circuit", "acc_random", "acc_random_q05", "acc_random_q95",
            "acc_ceiling", "gap", "gap_lo", "gap_hi"}
    if need - set(table.columns):
        raise ValueError(f"circuit table: missing columns {sorted(need - set(table.columns))}")
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    ax = axes[0]
    per = table[table["scope"] == "layer"]
    for i, (L, g) in enumerate(per.groupby("layers", sort=False)):
        g = g.sort_values("k")
        col = f"C{i}"
        ax.plot(g["k"], g["acc_circuit"], marker="o", color=col, label=f"layer {L}: circuit")
        ax.plot(g["k"], g["acc_random"], ls="--", color=col, alpha=0.8, label=f"layer {L}: random sets")
        ax.fill_between(g["k"], g["acc_random_q05"], g["acc_random_q95"], color=col, alpha=0.12, lw=0)
        ax.axhline(g["acc_ceiling"].iloc[0], color=col, ls=":", lw=1, label=f"layer {L}: all latents")
    ax.set_xscale("log")
    ks = sorted(per["k"].unique())
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("circuit size K (latents per layer)")
    ax.set_ylabel("probe test accuracy")
    ax.set_title("circuit vs same-size random sets", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    k_max = int(table["k"].max())
    b = table[(table["scope"] == "buildup") & (table["k"] == k_max)].sort_values("n_layers")
    x = np.arange(len(b))
    ax.plot(x, b["acc_circuit"], marker="o", color="C3", label=f"union of circuits (K={k_max} per layer)")
    ax.plot(x, b["acc_random"], marker="s", ls="--", color="grey", label="union of random sets")
    ax.fill_between(x, b["acc_random_q05"], b["acc_random_q95"], color="grey", alpha=0.15, lw=0)
    ax.plot(x, b["acc_ceiling"], ls=":", marker="_", ms=16, color="k", label="all latents of those layers")
    ax.set_xticks(x, ["+".join(f"L{v}" for v in s.split(",")) for s in b["layers"]])
    ax.set_xlabel("layers included (build-up)")
    ax.set_ylabel("probe test accuracy")
    u = b.iloc[-1]
    ax.set_title(f"faithfulness {u['acc_circuit'] / u['acc_ceiling']:.2f}; gap {u['gap']:+.3f} "
                 f"[{u['gap_lo']:+.3f}, {u['gap_hi']:+.3f}]", fontsize=10)
    ax.set_xlim(-0.5, len(b) - 0.5)
    ax.margins(y=0.4)  # room above the curves for the legend
    ax.legend(fontsize=7, loc="upper center")
    ax.grid(alpha=0.3)
    ax = axes[2]
    if len(ablation):
        ab = ablation.sort_values(["layer", "k"]).reset_index(drop=True)
        for i, r in ab.iterrows():
            null = [float(v) for v in str(r["null"]).split(",") if v]
            ax.scatter([i] * len(null), null, color="grey", s=14, alpha=0.7, label="random sets (seeded)" if i == 0 else None)
            ax.scatter([i], [r["effect"]], color="C3", marker="D", s=40, label="circuit" if i == 0 else None)
        ax.set_xticks(range(len(ab)), [f"L{r.layer}\nK={r.k}" for r in ab.itertuples()], fontsize=8)
        ax.axhline(0, color="k", lw=0.8)
        ax.legend(fontsize=7)
    ax.set_ylabel(f"drop of the class logit margin ({ablation['mode'].iloc[0] if len(ablation) else ''}-ablation)")
    ax.set_title("ablation vs seeded nulls (error term kept)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    task = table["task"].iloc[0] if "task" in table.columns else ""
    fig.suptitle(f"{title}\n{task}", fontsize=10)
    fig.tight_layout()
    finish(fig, path)


COMPARE_LABELS = {"fvu": "FVU (lower better)", "ce_recovered": "CE recovered (higher better)",
                  "ce_increase": "CE increase, nats/token (lower better)", "kl": "KL(clean || spliced) (lower better)"}
VERDICT_COLOURS = {"A better": "C2", "B better": "C3", "A higher": "C0", "B higher": "C1", "no difference": "grey"}


def _is_autointerp(metric: str) -> bool:
    """A compare row of auto-interp accuracy: "detection (<method>)" or "fuzzing (<method>)"."""
    return metric.startswith(("detection (", "fuzzing ("))


def compare_figure(table: pd.DataFrame, path, title: str) -> None:
    """Head-to-head verdicts (saeflow.evals.compare): one panel per metric, one row per (layer, A vs B) with
    the paired difference A - B and its bootstrap CI, coloured by verdict (green: A better, red: B better,
    grey: no difference), the values of A and B written beside it. Saved atomically."""
    from saeflow.report.plotting import finish, pyplot

    need = {"layer", "a", "b", "metric", "value_a", "value_b", "diff", "diff_lo", "diff_hi", "verdict"}
    if need - set(table.columns):
        raise ValueError(f"compare table: missing columns {sorted(need - set(table.columns))}")
    metrics = list(dict.fromkeys(table["metric"]))
    ncols = min(4, len(metrics))
    nrows = -(-len(metrics) // ncols)
    pairs = table[["layer", "a", "b"]].drop_duplicates().sort_values(["layer"], kind="stable")
    plt = pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 0.5 * len(pairs) * nrows + 1.8 * nrows),
                             squeeze=False)
    for ax, m in zip(axes.flat, metrics):
        g = table[table["metric"] == m]
        labels = []
        for i, pr in enumerate(pairs.itertuples()):
            r = g[(g["layer"] == pr.layer) & (g["a"] == pr.a) & (g["b"] == pr.b)]
            labels.append(f"L{pr.layer}: {pr.a} vs {pr.b}")
            if not len(r):
                pr_rows = table[(table["layer"] == pr.layer) & (table["a"] == pr.a) & (table["b"] == pr.b)]
                same_site = "site_a" in table.columns and (pr_rows["site_a"] == pr_rows["site_b"]).all()
                why = ("no H_pos" if m.startswith("mean_H_pos") else "not probed" if "@" in m else
                       "not explained" if _is_autointerp(m) else
                       "undefined (zeroing lowers CE)" if m == "ce_recovered" and same_site else
                       "not compared (different sites)")
                ax.text(0.5, i, why, transform=ax.get_yaxis_transform(), ha="center", va="center", fontsize=7,
                        color="0.6", style="italic")
                continue
            r = r.iloc[0]
            col = VERDICT_COLOURS[r["verdict"]]
            ax.errorbar([r["diff"]], [i], xerr=[[r["diff"] - r["diff_lo"]], [r["diff_hi"] - r["diff"]]], fmt="o",
                        color=col, capsize=3)
            ax.annotate(f"{r['value_a']:.3g} vs {r['value_b']:.3g}", (r["diff"], i), xytext=(0, 6),
                        textcoords="offset points", ha="center", fontsize=7, color=col)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_yticks(range(len(pairs)), labels, fontsize=7)
        ax.set_ylim(len(pairs) - 0.5, -0.7)
        unpaired = m.startswith("mean_H_pos") or _is_autointerp(m)
        ax.set_xlabel("A - B (" + ("unpaired" if unpaired else "paired") + " bootstrap CI)", fontsize=8)
        ax.set_title(COMPARE_LABELS.get(m) or (f"mean H_pos over latents, ctx {m.split('ctx')[1]} (unpaired)"
                                               if m.startswith("mean_H_pos") else
                                               f"auto-interp {m} (higher better)" if _is_autointerp(m) else
                                               f"probe accuracy, k={m.split('@')[1]} (higher better)" if "@" in m
                                               else m), fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    shown = set(table["verdict"]) | {"A better", "B better", "no difference"}
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=v) for v, c in VERDICT_COLOURS.items() if v in shown]
    handles.append(plt.Line2D([], [], ls="", label="(A: the first named of each pair; text: value of A vs B)"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    finish(fig, path)


def feature_diff_figure(table: pd.DataFrame, summary: dict, path, title: str) -> None:
    """Cross-model feature diff (saeflow.evals.feature_diff), one row per layer: the distribution over live
    latents of the best activation correlation with the other dictionary, for A and for B, against the
    misaligned-window null and the threshold; and each latent's asymmetry ratio (log10) against its best
    correlation, unmatched latents filled. Saved atomically."""
    from saeflow.report.plotting import finish, pyplot

    need = {"layer", "side", "preset", "live", "max_corr", "null_max_corr", "asymmetry", "unmatched", "latent"}
    if need - set(table.columns):
        raise ValueError(f"feature diff table: missing columns {sorted(need - set(table.columns))}")
    layers = sorted(table["layer"].unique())
    plt = pyplot()
    fig, axes = plt.subplots(len(layers), 2, figsize=(13, 4.2 * len(layers)), squeeze=False)
    thr = summary["threshold"]
    for row, L in enumerate(layers):
        t = table[(table["layer"] == L) & table["live"]]
        ls = summary["layers"][str(L)]
        ax = axes[row, 0]
        lo = min(0.0, float(t[["max_corr", "null_max_corr"]].min().min()))
        bins = np.linspace(lo, 1.0, 41)
        for side, col in (("A", "C0"), ("B", "C1")):
            g = t[t["side"] == side]
            s = ls[side]
            ax.hist(g["max_corr"], bins=bins, histtype="step", lw=1.8, color=col,
                    label=f"{side} = {s['preset']}: {s['n_unmatched']}/{s['n_live']} live unmatched")
            ax.hist(g["null_max_corr"], bins=bins, histtype="step", lw=1, ls="--", color=col,
                    label=f"{side} null (codes shifted 1.5 windows), q99 {s['null_q99']:.2f}")
        ax.axvline(thr, color="k", ls=":", lw=1.2, label=f"threshold {thr:g}")
        ax.set_xlabel("best activation correlation with the other dictionary's latents")
        ax.set_ylabel("latents")
        ax.set_yscale("log")
        ax.set_title(f"layer {L}: best match per live latent", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax = axes[row, 1]
        for side, col in (("A", "C0"), ("B", "C1")):
            g = t[t["side"] == side]
            la = np.log10(np.clip(g["asymmetry"].to_numpy(), 1e-3, 1e6))
            um = g["unmatched"].to_numpy()
            ax.scatter(g["max_corr"][~um], la[~um], s=8, color=col, alpha=0.35, label=f"{side}: matched")
            ax.scatter(g["max_corr"][um], la[um], s=16, color=col, edgecolor="k", lw=0.4, label=f"{side}: unmatched")
            for r in sorted(ls[side]["unmatched_top"], key=lambda r: -r["asymmetry"])[:3]:
                ax.annotate(f"{side}{r['latent']}", (r["max_corr"], np.log10(np.clip(r["asymmetry"], 1e-3, 1e6))),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.axvline(thr, color="k", ls=":", lw=1.2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xlabel("best activation correlation")
        ax.set_ylabel("log10 asymmetry ratio")
        ax.set_title(f"layer {L}: asymmetry (latent / its best match, on the latent's firing tokens)", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    finish(fig, path)


def autointerp_figure(summary: pd.DataFrame, path, title: str) -> None:
    """Auto-interp accuracy (saeflow.evals.autointerp) per layer and dictionary, one panel per task (detection,
    fuzzing) and one column per method: each dictionary's accuracy with its own explanations (filled) and with
    shuffled explanations (the control, hollow), with the two-level bootstrap CIs; chance (0.5) dotted.
    ``summary``: rows (dictionary, layer, method, task, control, accuracy, lo, hi, n_latents) of the group "all"."""
    from saeflow.report.plotting import finish, pyplot

    need = {"dictionary", "layer", "method", "task", "control", "accuracy", "lo", "hi", "n_latents"}
    if need - set(summary.columns):
        raise ValueError(f"autointerp summary: missing columns {sorted(need - set(summary.columns))}")
    methods = list(dict.fromkeys(summary["method"]))
    tasks = ["detection", "fuzzing"]
    dicts = list(dict.fromkeys(summary["dictionary"]))
    layers = sorted(set(summary["layer"]))
    plt = pyplot()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    fig, axes = plt.subplots(len(tasks), len(methods), figsize=(3.0 + 2.2 * len(layers) * len(methods), 6.4),
                             squeeze=False, sharey=True)
    width = 0.8 / max(1, len(dicts))
    for c, method in enumerate(methods):
        for r, task in enumerate(tasks):
            ax = axes[r, c]
            for k, d in enumerate(dicts):
                for ctrl, face in (("none", colors[k % len(colors)]), ("shuffled", "white")):
                    g = summary[(summary["method"] == method) & (summary["task"] == task) & (summary["dictionary"] == d)
                                & (summary["control"] == ctrl)].sort_values("layer")
                    if not len(g):
                        continue
                    x = np.array([layers.index(v) for v in g["layer"]]) - 0.4 + width * (k + 0.5) + (0.12 * width if ctrl == "shuffled" else -0.12 * width)
                    acc = g["accuracy"].to_numpy(float)
                    ax.errorbar(x, acc, yerr=np.vstack([acc - g["lo"], g["hi"] - acc]).clip(min=0), fmt="o",
                                mfc=face, mec=colors[k % len(colors)], color=colors[k % len(colors)], capsize=3, ms=6,
                                label=f"{d}" + (" (shuffled explanations)" if ctrl == "shuffled" else
                                                f", {int(g['n_latents'].iloc[0])} latents"))
            ax.axhline(0.5, color="grey", lw=0.8, ls=":")
            ax.set_xticks(range(len(layers)), [f"layer {v}" for v in layers])
            ax.set_ylim(0, 1.05)
            ax.set_title(f"{task}: {method}", fontsize=9)
            if c == 0:
                ax.set_ylabel(f"{task} accuracy (chance 0.5)")
            ax.grid(alpha=0.3, axis="y")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.09, 1, 1))
    finish(fig, path)
