"""Reconstruction evaluation of a dictionary (SAE or transcoder) spliced into a TransformerLens model.

Definitions follow spec/metrics.md ("Reconstruction"); the spliced-loss conventions follow sae-lens'
``evals.get_recons_loss`` so that the numbers are directly comparable with ``sae_lens.evals.run_evals``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from saeflow.evals.bootstrap import bootstrap_ci
from saeflow.tensors import to_numpy

HIST_EDGES = np.linspace(-8.0, 0.0, 33)  # log10 firing frequency bins; frequency 0 is counted as dead
DENSE_THRESHOLD = 0.1


def evaluate_recon(model, dictionary, tokens, hook_in: str, hook_out: str | None = None,
                   batch_size: int = 16, exclude_bos: bool = True, n_resamples: int = 1000,
                   confidence: float = 0.95, seed: int = 0, encode: Callable | None = None,
                   decode: Callable | None = None, skip: Callable | None = None, zero_all_positions: bool = True,
                   progress: bool = False) -> tuple[dict, dict]:
    """Reconstruction metrics with per-sequence bootstrap CIs.

    x = activation at ``hook_in``, f = encode(x) (codes), target y = x (SAE) or the activation at
    ``hook_out`` (transcoder), y_hat = decode(f) (+ skip(x) for skip transcoders). Over the N evaluated tokens (position 0 dropped
    when ``exclude_bos``):

      FVU  = sum ||y - y_hat||^2 / sum ||y - mean(y)||^2     (float64; sum||y-m||^2 = sum||y||^2 - N||m||^2)
      EV   = 1 - FVU                                         (= sae-lens ``explained_variance``)
      L0   = mean_t #{i : f_i(t) != 0};  dead = frac latents with 0 firings;  dense = frac firing on > 10%
      CE_clean / CE_dict / CE_zero = mean next-token CE predicted from evaluated positions, with the site
             (``hook_out`` or else ``hook_in``) left as is / replaced by y_hat / replaced by 0
      CE_recovered = (CE_zero - CE_dict) / (CE_zero - CE_clean)
      KL   = mean_t KL(p_clean(t) || p_dict(t))              (all evaluated positions, incl. the last)

    Splicing as in sae-lens ``get_recons_loss``: y_hat replaces the site only at evaluated positions
    (BOS keeps its clean activation), while the zero ablation zeroes every position, BOS included
    (``zero_all_positions=False`` zeroes only the evaluated positions, so that a zero dictionary gives
    CE_zero == CE_dict also when BOS is excluded). CE at position t is the loss of predicting token
    t+1, kept when t is evaluated.

    Returns (summary, per_seq). summary is JSON-serialisable; each headline is {"value", "lo", "hi"},
    a percentile bootstrap over sequences of sum(num)/sum(den): fvu = sse/sst, ce_recovered =
    (ce_zero - ce_dict)/(ce_zero - ce_clean) (per-sequence CE sums), means = sums/token counts; ev mirrors
    fvu. per_seq holds equal-length 1-D numpy columns (a Parquet table): seq_idx, n_tokens, n_pred_tokens,
    sse, sst (the sequence's share of sum||y - m||^2, m the mean over all evaluated tokens), sum_sq, and
    per-sequence means l0, kl, ce_clean, ce_dict, ce_zero.
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int):
        raise ValueError(f"tokens must be an integer tensor [n_seq, T], got {getattr(tokens, 'shape', type(tokens))}")
    n_seq, T = tokens.shape
    if n_seq < 1 or T < 2 + int(exclude_bos):
        raise ValueError(f"tokens needs >= 1 sequence and >= {2 + int(exclude_bos)} positions, got {tuple(tokens.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not hook_in or hook_in not in model.hook_dict:
        raise ValueError(f"hook_in {hook_in!r} is not a hook point of the model")
    if hook_out is not None and hook_out not in model.hook_dict:
        raise ValueError(f"hook_out {hook_out!r} is not a hook point of the model")
    if (encode is None or decode is None) and dictionary is None:
        raise ValueError("dictionary is required unless both encode and decode are given")
    encode = encode or dictionary.encode
    decode = decode or dictionary.decode
    dict_device = getattr(dictionary, "device", None)
    site = hook_out or hook_in

    # Per-sequence accumulators (float64 sums; means are formed once at the end).
    cols = {k: np.zeros(n_seq) for k in ("sse", "sum_sq", "l0_sum", "ce_clean_sum", "ce_dict_sum",
                                         "ce_zero_sum", "kl_sum")}
    sum_y = None  # [n_seq, d] float64: per-sequence sum of y, needed for the global mean
    fire_counts = None  # [d_sae] int64
    pos_mask_1 = torch.ones(T, dtype=torch.bool)
    if exclude_bos:
        pos_mask_1[0] = False
    n_tok_seq = int(pos_mask_1.sum())
    n_pred_seq = int(pos_mask_1[:-1].sum())  # CE has no target after the last position

    starts = range(0, n_seq, batch_size)
    if progress:
        from tqdm.auto import tqdm
        starts = tqdm(starts, desc="recon")

    with torch.no_grad():  # HookedTransformer has no dropout, so train/eval mode does not matter here
        for s0 in starts:
            tok = tokens[s0:s0 + batch_size].to(model.cfg.device)
            b = tok.shape[0]
            sl = slice(s0, s0 + b)
            acts = {}

            def grab(act, hook):
                acts[hook.name] = act

            names = [hook_in] + ([hook_out] if hook_out and hook_out != hook_in else [])
            logits_clean, ce_clean = model.run_with_hooks(
                tok, return_type="both", loss_per_token=True, fwd_hooks=[(n, grab) for n in names])
            x, y = acts[hook_in], acts[site]
            x_in = x.to(dict_device) if dict_device is not None else x
            f = encode(x_in)
            if f.is_sparse:
                f = f.to_dense()
            y_hat = decode(f)
            if skip is not None:
                y_hat = y_hat + skip(x_in)
            y_hat = y_hat.to(device=y.device, dtype=y.dtype).reshape(y.shape)
            mask = pos_mask_1.to(y.device).expand(b, T)
            bmask = mask.reshape(b, T, *([1] * (y.ndim - 2)))

            # Splice y_hat only where evaluated (sae-lens keeps BOS clean); zero everywhere like sae-lens
            # unless asked to zero the same positions as the dictionary splice.
            def splice_dict(act, hook):
                return torch.where(bmask, y_hat, act)

            def splice_zero(act, hook):
                return torch.zeros_like(act) if zero_all_positions else torch.where(bmask, 0.0, act)

            logits_dict, ce_dict = model.run_with_hooks(
                tok, return_type="both", loss_per_token=True, fwd_hooks=[(site, splice_dict)])
            _, ce_zero = model.run_with_hooks(
                tok, return_type="both", loss_per_token=True, fwd_hooks=[(site, splice_zero)])

            # Reconstruction sums, float64 before squaring so large-mean sites do not cancel.
            m64 = mask.to(torch.float64)
            y64 = y.reshape(b, T, -1).to(torch.float64)
            d64 = y64 - y_hat.reshape(b, T, -1).to(torch.float64)
            cols["sse"][sl] = to_numpy(((d64 ** 2).sum(-1) * m64).sum(-1))
            cols["sum_sq"][sl] = to_numpy(((y64 ** 2).sum(-1) * m64).sum(-1))
            if sum_y is None:
                sum_y = np.zeros((n_seq, y64.shape[-1]))
            sum_y[sl] = to_numpy((y64 * m64[..., None]).sum(1))

            active = (f != 0) & mask.to(f.device).reshape(b, T, *([1] * (f.ndim - 2)))
            active = active.reshape(b, T, -1)
            cols["l0_sum"][sl] = to_numpy(active.sum((1, 2)))
            fc = to_numpy(active.sum((0, 1)), torch.int64)
            fire_counts = fc if fire_counts is None else fire_counts + fc

            pmask = mask[:, :-1].to(torch.float64)
            for key, ce in (("ce_clean_sum", ce_clean), ("ce_dict_sum", ce_dict), ("ce_zero_sum", ce_zero)):
                cols[key][sl] = to_numpy((ce.to(torch.float64) * pmask).sum(-1))
            # KL(p_clean || p_dict) per position; log_target keeps it exact where p_clean underflows.
            kl = F.kl_div(F.log_softmax(logits_dict, -1), F.log_softmax(logits_clean, -1),
                          reduction="none", log_target=True).sum(-1)
            cols["kl_sum"][sl] = to_numpy((kl.to(torch.float64) * m64).sum(-1))

    n_tok = np.full(n_seq, n_tok_seq, dtype=np.int64)
    n_pred = np.full(n_seq, n_pred_seq, dtype=np.int64)
    N = int(n_tok.sum())
    mean_y = sum_y.sum(0) / N
    # Each sequence's share of sum||y - m||^2 (m = mean over all evaluated tokens), exact identity.
    sst = cols["sum_sq"] - 2.0 * sum_y @ mean_y + n_tok * float(mean_y @ mean_y)

    kw = dict(n_resamples=n_resamples, confidence=confidence, seed=seed)

    def ci(num, den):
        v, lo, hi = bootstrap_ci(num, den, **kw)
        return {"value": v, "lo": lo, "hi": hi}

    # Ratio form with the full-sample mean in each sequence's SST share (mean treated as fixed).
    fvu = ci(cols["sse"], sst)
    ce_rec = ci(cols["ce_zero_sum"] - cols["ce_dict_sum"], cols["ce_zero_sum"] - cols["ce_clean_sum"])
    freq = fire_counts / N
    live = freq[freq > 0]
    hist, _ = np.histogram(np.clip(np.log10(live), HIST_EDGES[0], HIST_EDGES[-1]), bins=HIST_EDGES)

    summary = {
        "n_seq": int(n_seq), "n_tokens": N, "n_pred_tokens": int(n_pred.sum()), "n_latents": int(freq.size),
        "hook_in": hook_in, "hook_out": hook_out, "exclude_bos": bool(exclude_bos),
        "confidence": float(confidence), "n_resamples": int(n_resamples), "seed": int(seed),
        "fvu": fvu,
        # EV = 1 - FVU is monotone decreasing, so its percentile CI is the mirrored FVU CI.
        "ev": {"value": 1.0 - fvu["value"], "lo": 1.0 - fvu["hi"], "hi": 1.0 - fvu["lo"]},
        "l0": ci(cols["l0_sum"], n_tok),
        "dead_frac": float(np.mean(fire_counts == 0)),
        "dense_frac": float(np.mean(freq > DENSE_THRESHOLD)),
        "firing_freq_hist": {"edges": HIST_EDGES.tolist(), "counts": hist.astype(int).tolist(),
                             "n_dead": int(np.sum(fire_counts == 0))},
        "ce_clean": ci(cols["ce_clean_sum"], n_pred),
        "ce_dict": ci(cols["ce_dict_sum"], n_pred),
        "ce_zero": ci(cols["ce_zero_sum"], n_pred),
        "ce_recovered": ce_rec,
        "kl": ci(cols["kl_sum"], n_tok),
    }
    per_seq = {
        "seq_idx": np.arange(n_seq, dtype=np.int64), "n_tokens": n_tok, "n_pred_tokens": n_pred,
        "sse": cols["sse"], "sst": sst, "sum_sq": cols["sum_sq"],
        "l0": cols["l0_sum"] / n_tok, "kl": cols["kl_sum"] / n_tok,
        "ce_clean": cols["ce_clean_sum"] / n_pred, "ce_dict": cols["ce_dict_sum"] / n_pred,
        "ce_zero": cols["ce_zero_sum"] / n_pred,
    }
    return summary, per_seq
