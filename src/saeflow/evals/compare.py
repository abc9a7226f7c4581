"""Head-to-head verdicts between two dictionaries on the same (preset, dataset, layer) (seed 000's SAE vs
skip-transcoder rows).

Every shared headline is a statistic S of per-item values; the items are the same for both dictionaries
(the recon eval windows, the probe's test windows), so the difference is a paired percentile bootstrap:
resample b draws n item indices idx_b with replacement (saeflow.evals.bootstrap) and

    D_b = S_A(idx_b) - S_B(idx_b),        D = S_A(all) - S_B(all),        CI = quantiles of D_b.

Statistics (ratio of sums over items, as the recon and probe nodes report them):

    fvu           sum sse / sum sst                              lower is better   same site only
    ce_recovered  sum(ce_zero - ce_dict) / sum(ce_zero - ce_clean)   higher        same site only
    ce_increase   sum(ce_dict - ce_clean) / sum n_pred  (nats/token)   lower       any two dictionaries
    kl            sum kl / sum n_tokens      (KL(p_clean || p_dict))   lower       any two dictionaries
    probe_acc@k   mean correct over test windows (top-k latents)       higher      probed dictionaries

CE recovered is left out where either side's zero ablation does not raise the loss (sum(ce_zero - ce_clean)
<= 0, as on a randomized model): its denominator's sign flips and a worse splice would score above 1.
FVU and CE recovered are compared only between dictionaries of the same site (hook_in and hook_out):
a transcoder's FVU is of mlp_out and its zero-ablation baseline is another site, so those differences
would not measure one thing. CE increase and KL are read at the model's output, on the same windows,
whatever the site.

Verdict: "A better" when the CI excludes 0 on A's side (D < 0 for lower-is-better metrics), "B better"
when it excludes 0 on B's side, else "no difference". A metric with no better direction (mean H_pos: how
local a dictionary's latents are) gets "A higher" / "B higher" / "no difference".

Where the items differ between A and B (H_pos: each dictionary's own latents), the bootstrap is unpaired:
each side's items are resampled on their own (seeds ``seed`` and ``seed + 1``), D_b = mean_A,b - mean_B,b.
"""

from __future__ import annotations

import numpy as np

from saeflow.evals import probe
from saeflow.evals.bootstrap import bootstrap_ci

# metric -> (higher is better, needs the same site)
RECON_METRICS = {"fvu": (False, True), "ce_recovered": (True, True), "ce_increase": (False, False),
                 "kl": (False, False)}


def verdict(lo: float, hi: float, higher_is_better: bool | None) -> str:
    """The verdict of a difference D = A - B with CI [lo, hi] (``higher_is_better`` None: no better direction)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError(f"a comparison's CI must be finite, got [{lo}, {hi}]")
    if higher_is_better is None:
        return "A higher" if lo > 0 else "B higher" if hi < 0 else "no difference"
    if lo > 0:
        return "A better" if higher_is_better else "B better"
    if hi < 0:
        return "B better" if higher_is_better else "A better"
    return "no difference"


def recon_ratio_terms(per_seq) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(numerator, denominator) per window of each recon metric, from a recon node's per_seq table
    (saeflow.evals.recon.evaluate_recon: per-sequence CE and KL are means, so they are turned back into sums)."""
    c = {k: np.asarray(per_seq[k], dtype=np.float64) for k in
         ("sse", "sst", "n_tokens", "n_pred_tokens", "kl", "ce_clean", "ce_dict", "ce_zero")}
    n_pred, n_tok = c["n_pred_tokens"], c["n_tokens"]
    return {"fvu": (c["sse"], c["sst"]),
            "ce_recovered": ((c["ce_zero"] - c["ce_dict"]) * n_pred, (c["ce_zero"] - c["ce_clean"]) * n_pred),
            "ce_increase": ((c["ce_dict"] - c["ce_clean"]) * n_pred, n_pred),
            "kl": (c["kl"] * n_tok, n_tok)}


def paired_ratio_diff(num_a, den_a, num_b, den_b, n_resamples: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float, float, float, float]:
    """(S_A, S_B, D, lo, hi) with S = sum(num)/sum(den) over items, D = S_A - S_B and its paired bootstrap CI."""
    arrs = [np.asarray(a, dtype=np.float64) for a in (num_a, den_a, num_b, den_b)]
    n = arrs[0].size
    if n == 0 or any(a.shape != (n,) for a in arrs):
        raise ValueError(f"paired items must be non-empty 1-D arrays of one length, got {[a.shape for a in arrs]}")
    na, da, nb, db = arrs

    def stat(idx):
        with np.errstate(divide="ignore", invalid="ignore"):
            return na[idx].sum(-1) / da[idx].sum(-1) - nb[idx].sum(-1) / db[idx].sum(-1)

    d, lo, hi = bootstrap_ci(None, stat=stat, n=n, vectorized=True, n_resamples=n_resamples,
                             confidence=confidence, seed=seed)
    return float(na.sum() / da.sum()), float(nb.sum() / db.sum()), d, lo, hi


def _row(metric, source, k, higher, sa, sb, d, lo, hi, n) -> dict:
    return {"metric": metric, "source": source, "k": k, "higher_is_better": higher, "value_a": sa, "value_b": sb,
            "diff": d, "diff_lo": lo, "diff_hi": hi, "verdict": verdict(lo, hi, higher), "n_items": int(n),
            "paired": True}


def compare_recon(per_seq_a, per_seq_b, same_site: bool, n_resamples: int = 1000, confidence: float = 0.95,
                  seed: int = 0) -> list[dict]:
    """Rows of the recon headlines of A vs B on the same eval windows (FVU and CE recovered only when
    ``same_site``; CE recovered only where both zero ablations raise the loss). Refuses tables of different
    lengths; that they are the same windows is the caller's to check (the recon manifests' windows keys)."""
    a_idx, b_idx = np.asarray(per_seq_a["seq_idx"]), np.asarray(per_seq_b["seq_idx"])
    if not np.array_equal(a_idx, b_idx) or not np.array_equal(np.asarray(per_seq_a["n_tokens"]),
                                                              np.asarray(per_seq_b["n_tokens"])):
        raise ValueError("recon tables of different windows cannot be paired (seq_idx or n_tokens differ)")
    ta, tb = recon_ratio_terms(per_seq_a), recon_ratio_terms(per_seq_b)
    rows = []
    for m, (higher, site_bound) in RECON_METRICS.items():
        if site_bound and not same_site:
            continue
        if m == "ce_recovered" and min(ta[m][1].sum(), tb[m][1].sum()) <= 0:
            continue  # zero-ablating the site does not raise the loss: CE recovered is undefined (its sign flips)
        rows.append(_row(m, "recon", "", higher, *paired_ratio_diff(*ta[m], *tb[m], n_resamples, confidence, seed),
                         len(a_idx)))
    return rows


def compare_unpaired_means(values_a, values_b, metric: str, source: str, k: str = "",
                           higher_is_better: bool | None = None, n_resamples: int = 1000, confidence: float = 0.95,
                           seed: int = 0) -> dict:
    """The row of mean(values_a) - mean(values_b) over items that differ between A and B, with the unpaired
    bootstrap CI (each side resampled on its own)."""
    a, b = np.asarray(values_a, dtype=np.float64), np.asarray(values_b, dtype=np.float64)
    if a.ndim != 1 or b.ndim != 1 or not a.size or not b.size:
        raise ValueError(f"unpaired items must be non-empty 1-D arrays, got {a.shape}, {b.shape}")
    ga, gb = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    draws = np.array([a[ga.integers(0, a.size, a.size)].mean() - b[gb.integers(0, b.size, b.size)].mean()
                      for _ in range(int(n_resamples))])
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(draws, [alpha, 1 - alpha])
    row = _row(metric, source, k, higher_is_better, float(a.mean()), float(b.mean()), float(a.mean() - b.mean()),
               float(lo), float(hi), a.size + b.size)
    return {**row, "paired": False}


def compare_correct(correct_a, correct_b, metric: str, source: str, k: str = "", n_resamples: int = 1000,
                    confidence: float = 0.95, seed: int = 0) -> dict:
    """The row of an accuracy (mean of per-item correctness) of A vs B on the same items: the probe's own
    paired bootstrap of the difference (saeflow.evals.probe.paired_bootstrap_diff)."""
    a, b = np.asarray(correct_a, dtype=np.float64), np.asarray(correct_b, dtype=np.float64)
    d, lo, hi = probe.paired_bootstrap_diff(a, b, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return _row(metric, source, k, True, float(a.mean()), float(b.mean()), d, lo, hi, a.size)
