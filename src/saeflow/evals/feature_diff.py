"""Cross-model feature diff (InterpGPT's feature_diff.json): which latents of model A's dictionary model B's
dictionary lacks, and the reverse.

Both models read the same windows (same tokenizer; the config check refuses other pairs). Over the tokens
t of those windows (BOS left out), with codes a_i(t) of A's dictionary and b_j(t) of B's:

    corr(i, j)    Pearson correlation of a_i and b_j over t (float64 running sums; 0 for a latent that
                  never varies, which is reported as dead)
    match_A(i)    argmax_j corr(i, j),  max_corr_A(i) = its value            (and the same for B)
    cos_A(i)      max_j cos(W_dec,A[i], W_dec,B[j])    (meaningful when A and B share a residual basis:
                  two dictionaries of one model, or a model and its fine-tune; reported, not used to match)
    null          the same max correlation against B's codes shifted by 1.5 windows (neither tokens nor
                  positions align; a whole-window shift would keep position-locked latents aligned): what a
                  best match reaches by chance; null_q99 = its 99th percentile
    unmatched     live latents with max_corr < threshold
    asymmetry(i)  mean a_i(t) over the tokens where a_i fires / mean b_match(i)(t) over the same tokens
                  (B's mean floored at 1e-6): how much more A's latent fires than its best B counterpart
                  on A's own inputs; large for a feature B lacks
"""

from __future__ import annotations

import numpy as np

from saeflow.tensors import to_numpy

ASYMMETRY_FLOOR = 1e-6


class CodeCorrelation:
    """Running Pearson correlation between every column of A and every column of B over rows (tokens)."""

    def __init__(self, d_a: int, d_b: int, device="cpu"):
        import torch

        z = {"dtype": torch.float64, "device": device}
        self.n = 0
        self.sa, self.sb = torch.zeros(d_a, **z), torch.zeros(d_b, **z)
        self.saa, self.sbb = torch.zeros(d_a, **z), torch.zeros(d_b, **z)
        self.sab = torch.zeros(d_a, d_b, **z)

    def update(self, fa, fb) -> None:
        """fa [n, d_a], fb [n, d_b]: the same n tokens."""
        if fa.shape[0] != fb.shape[0]:
            raise ValueError(f"codes of A and B must cover the same tokens, got {fa.shape[0]} and {fb.shape[0]} rows")
        fa, fb = fa.double(), fb.double()
        self.n += fa.shape[0]
        self.sa += fa.sum(0)
        self.sb += fb.sum(0)
        self.saa += (fa * fa).sum(0)
        self.sbb += (fb * fb).sum(0)
        self.sab += fa.T @ fb

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(corr [d_a, d_b], live_a, live_b): live = the latent's variance over the tokens is > 0."""
        import torch

        if self.n < 2:
            raise ValueError(f"a correlation needs at least 2 tokens, got {self.n}")
        ma, mb = self.sa / self.n, self.sb / self.n
        va = (self.saa / self.n - ma * ma).clamp_min(0)
        vb = (self.sbb / self.n - mb * mb).clamp_min(0)
        # relative floor: a constant latent's variance is rounding error of its mean square
        live_a = va > 1e-12 * (self.saa / self.n).clamp_min(1e-300)
        live_b = vb > 1e-12 * (self.sbb / self.n).clamp_min(1e-300)
        cov = self.sab / self.n - ma[:, None] * mb[None, :]
        den = torch.sqrt(va)[:, None] * torch.sqrt(vb)[None, :]
        corr = torch.where(live_a[:, None] & live_b[None, :], cov / den.clamp_min(1e-300), torch.zeros_like(cov))
        return to_numpy(corr.clamp(-1, 1)), to_numpy(live_a), to_numpy(live_b)


def best_match(corr: np.ndarray, live_other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the column of the largest value among live columns (ties: smaller id), and that value."""
    c = np.where(np.asarray(live_other)[None, :], corr, -np.inf)
    j = np.argmax(c, axis=1)
    v = c[np.arange(c.shape[0]), j]
    return j, np.where(np.isfinite(v), v, 0.0)


def decoder_cosine_match(w_a: np.ndarray, w_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of W_dec,A [d_a, d_model], the row of W_dec,B with the largest cosine, and that cosine."""
    a = np.asarray(w_a, dtype=np.float64)
    b = np.asarray(w_b, dtype=np.float64)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"decoders of different widths d_model: {a.shape[1]} vs {b.shape[1]}")
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-300)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-300)
    cos = a @ b.T
    j = np.argmax(cos, axis=1)
    return j, cos[np.arange(cos.shape[0]), j]


class FiringStats:
    """Second pass, given A's match in B: over the tokens where a_i fires, the sums of a_i and of
    b_match(i), the count, and A's top-k (activation, token index) per latent."""

    def __init__(self, match, top_k: int, device="cpu"):
        import torch

        self.match = torch.as_tensor(np.asarray(match), dtype=torch.long, device=device)
        d = len(match)
        z = {"dtype": torch.float64, "device": device}
        self.sum_a, self.sum_b, self.count = torch.zeros(d, **z), torch.zeros(d, **z), torch.zeros(d, **z)
        self.top_k = top_k
        self.top_v = torch.full((top_k, d), -float("inf"), **z)
        self.top_i = torch.full((top_k, d), -1, dtype=torch.long, device=device)

    def update(self, fa, fb, offset: int) -> None:
        """fa [n, d_a], fb [n, d_b] for tokens offset .. offset + n - 1."""
        import torch

        fa, fb = fa.double(), fb.double()
        fires = fa > 0
        self.sum_a += torch.where(fires, fa, 0).sum(0)
        self.sum_b += torch.where(fires, fb[:, self.match], 0).sum(0)
        self.count += fires.sum(0)
        idx = torch.arange(offset, offset + fa.shape[0], device=fa.device)[:, None].expand_as(fa)
        v = torch.cat([self.top_v, torch.where(fires, fa, -float("inf"))])
        i = torch.cat([self.top_i, idx])
        order = torch.argsort(-v, dim=0, stable=True)[: self.top_k]
        self.top_v, self.top_i = torch.gather(v, 0, order), torch.gather(i, 0, order)

    def result(self) -> dict:
        mean_a = to_numpy(self.sum_a / self.count.clamp_min(1))
        mean_b = to_numpy(self.sum_b / self.count.clamp_min(1))
        return {"n_firing": to_numpy(self.count).astype(np.int64), "mean_act": mean_a, "mean_act_match": mean_b,
                "asymmetry": mean_a / np.maximum(mean_b, ASYMMETRY_FLOOR),
                "top_values": to_numpy(self.top_v).T, "top_tokens": to_numpy(self.top_i).T}
