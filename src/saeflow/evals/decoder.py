"""What a latent writes: its decoder row read through the unembedding, and its nearest latents by decoder cosine.

Logit weights (the direct path from the residual stream to the logits, as feature dashboards show them): for a
decoder row v (d_model) and a model whose final normalisation is LN(x) = w * (x - mean x) / s + b (LayerNorm)
or w * x / s (RMSNorm),

    logit_weights(v) = (w * c(v)) @ W_U,    c(v) = v - mean(v) for LayerNorm, v for RMSNorm,

i.e. the linear part of v's direct effect on the logits: the scale s depends on the whole residual stream and
is positive, so it changes no ranking, and the biases b, b_U do not depend on v. A model whose LayerNorm weights
were folded into W_U (TransformerLens `LNPre` / `RMSPre`) has w = 1; both give the same numbers (tested).
The most promoted tokens are the largest entries, the most suppressed the smallest.

Nearest latents: cosine of L2-normalised decoder rows, cos(a, b) = <v_a, v_b> / (||v_a|| ||v_b||); for each
requested latent the `n` others of largest cosine (ties: lower id).
"""

from __future__ import annotations

import numpy as np

from saeflow.evals.contexts import token_texts
from saeflow.tensors import to_numpy


def logit_weights(model, rows) -> "torch.Tensor":
    """[n, d_vocab] logit weights of decoder rows [n, d_model] through a TransformerLens model's final norm and
    unembedding (module docstring); float32 on the model's device."""
    import torch

    norm = model.cfg.normalization_type
    if norm not in ("LN", "LNPre", "RMS", "RMSPre", None):
        raise ValueError(f"final normalisation {norm!r}; known: LN, LNPre, RMS, RMSPre, None")
    with torch.no_grad():
        W_U = model.W_U
        v = torch.as_tensor(rows, dtype=torch.float32, device=W_U.device)
        if norm in ("LN", "LNPre"):
            v = v - v.mean(-1, keepdim=True)
        w = getattr(getattr(model, "ln_final", None), "w", None)
        if w is not None:
            v = v * w.float()
        return v @ W_U.float()


def top_tokens(weights, n: int, tokenizer) -> list[dict]:
    """Per row of logit weights, the `n` most promoted and `n` most suppressed tokens:
    [{"promoted": [[token text, weight], ...], "suppressed": [...]}]."""
    import torch

    w = torch.as_tensor(weights)
    n = min(n, w.shape[-1])
    hi_v, hi_i = w.topk(n, dim=-1)
    lo_v, lo_i = (-w).topk(n, dim=-1)
    hi_v, hi_i, lo_v, lo_i = (to_numpy(t) for t in (hi_v, hi_i, -lo_v, lo_i))
    text = token_texts(tokenizer, np.unique(np.concatenate([hi_i.ravel(), lo_i.ravel()])))
    return [{"promoted": [[text[int(i)], float(v)] for i, v in zip(hi_i[r], hi_v[r])],
             "suppressed": [[text[int(i)], float(v)] for i, v in zip(lo_i[r], lo_v[r])]} for r in range(w.shape[0])]


def nearest_latents(W_dec, latents, n: int, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(ids [len(latents), n], cosines [len(latents), n]) of each latent's n nearest other latents by decoder
    cosine, computed in chunks of the dictionary on W_dec's device. A zero decoder row has cosine 0 with all."""
    import torch

    W = torch.as_tensor(W_dec).detach().float()
    lat = torch.as_tensor(np.asarray(latents, dtype=np.int64), device=W.device)
    n = min(n, W.shape[0] - 1)
    U = W / W.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    q = U[lat]
    best_v = torch.full((lat.numel(), 0), -2.0, device=W.device)
    best_i = torch.zeros((lat.numel(), 0), dtype=torch.int64, device=W.device)
    for s in range(0, W.shape[0], chunk):
        c = q @ U[s: s + chunk].T
        ids = torch.arange(s, s + c.shape[1], device=W.device)
        c = torch.where(ids[None, :] == lat[:, None], torch.full_like(c, -3.0), c)  # never itself
        v = torch.cat([best_v, c], dim=1)
        i = torch.cat([best_i, ids[None, :].expand(lat.numel(), -1)], dim=1)
        # ties: lower id first (a stable sort by id, then a stable sort by value)
        order = torch.argsort(i, dim=1, stable=True)
        v, i = v.gather(1, order), i.gather(1, order)
        order = torch.argsort(-v, dim=1, stable=True)[:, :n]
        best_v, best_i = v.gather(1, order), i.gather(1, order)
    return to_numpy(best_i), to_numpy(best_v, torch.float32)
