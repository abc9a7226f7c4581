"""The reconstruction summary figure: FVU, L0, CE loss recovered and dead fraction per layer.
"""

from __future__ import annotations

from pathlib import Path

from saeflow.report.plotting import save


def recon_summary_figure(df, path: Path) -> None:
    """FVU, L0, CE loss recovered and dead fraction per layer; one row of panels per (preset, dataset),
    one line per dictionary; error bars are the bootstrap CIs recorded by the recon step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("fvu", "FVU (lower is better)"), ("l0", "L0 (active latents / token)"),
               ("ce_recovered", "CE loss recovered"), ("dead_frac", "dead fraction (never fire on eval)")]
    groups = list(df.groupby(["preset", "dataset"], sort=True))
    fig, axes = plt.subplots(len(groups), len(metrics), figsize=(4.2 * len(metrics), 3.2 * len(groups)),
                             squeeze=False)
    for r, ((preset, dataset), g) in enumerate(groups):
        for c, (m, title) in enumerate(metrics):
            ax = axes[r][c]
            names = sorted(g["dictionary"].unique())
            for i, (dname, d) in enumerate(g.groupby("dictionary", sort=True)):
                d = d.sort_values("layer")
                # Dodge along x so that equal values (e.g. L0 = k for every TopK) stay visible.
                x = d["layer"] + 0.08 * (i - (len(names) - 1) / 2)
                err = [d[m] - d[f"{m}_lo"], d[f"{m}_hi"] - d[m]] if f"{m}_lo" in d else None
                ax.errorbar(x, d[m], yerr=err, marker="o", capsize=3, label=f"{dname} ({d['kind'].iloc[0]})")
            ax.set_xticks(sorted(g["layer"].unique()))
            ax.set_xlabel("layer")
            ax.set_title(f"{title}\n{preset} / {dataset}", fontsize=9)
            ax.grid(alpha=0.3)
            if m in ("fvu", "dead_frac", "l0"):
                ax.set_ylim(bottom=0)
        axes[r][0].legend(fontsize=7, loc="best")
    fig.suptitle("Reconstruction on held-out windows (95% bootstrap CIs over sequences)", fontsize=11)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
