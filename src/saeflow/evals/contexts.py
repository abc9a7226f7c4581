"""Top contexts of latents as a reader sees them: firing statistics and activation histograms from a scan of
cached codes, the per-token activations of the windows that hold top events, and their decoded text.

Codes are dense f [tokens, d_sae] in window-major order, `P` rows per window (positions 1..T-1: BOS is left
out, as from every token-level metric; saeflow.data.activations.iter_window_blocks).

- Latent statistics (`LatentScan`), over the N scanned tokens:
      n_fired(a)         = #{t : f_a(t) > 0}
      density(a)         = n_fired(a) / N
      max_activation(a)  = max_t f_a(t)
      mean_activation(a) = sum_{t : f_a(t) > 0} f_a(t) / n_fired(a)        (over the tokens where a fires)
      hist(a)[b]         = #{t : f_a(t) in (b, b + 1] * max_activation(a) / n_bins},  b = 0..n_bins-1
  The histogram needs each latent's maximum first, so it is filled in a second pass over the same codes.
- Window activations (`window_activations`): for an event (window w, latent a), f_a(w, p) at every position
  p = 1..T-1 of the window, gathered from the blocks that hold w.
- Text: each token decoded on its own (`token_strings`: the strings a page tints token by token) and the
  context decoded whole (`context`); `peak_index` is the peak token's index in those lists. A context is the
  whole window after BOS, or a span of it around the peak (`peak_span`) where windows are long.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saeflow.tensors import to_numpy


class LatentScan:
    """Firing statistics of every latent, accumulated block by block (first pass: `add`; second pass, once
    every block was added: `add_histogram`). Accumulators live on the device of the codes they meet."""

    def __init__(self, n_bins: int = 24):
        if n_bins < 1:
            raise ValueError(f"n_bins must be >= 1, got {n_bins}")
        self.n_bins = n_bins
        self.n_tokens = 0
        self.count = self.total = self.max = self.hist = None

    def add(self, f) -> None:
        import torch

        if self.count is None:
            d = f.shape[-1]
            self.count = torch.zeros(d, dtype=torch.int64, device=f.device)
            self.total = torch.zeros(d, dtype=torch.float64, device=f.device)
            self.max = torch.zeros(d, dtype=torch.float32, device=f.device)
        fired = f > 0
        self.count += fired.sum(0)
        self.total += torch.where(fired, f, 0).sum(0, dtype=torch.float64)
        self.max = torch.maximum(self.max, f.max(0).values.float().clamp_min(0))
        self.n_tokens += f.shape[0]

    def add_histogram(self, f) -> None:
        """Histogram counts of the firing activations, in n_bins equal bins over (0, max_activation]."""
        import torch

        if self.max is None:
            raise RuntimeError("add_histogram needs the first pass (add) over every block first")
        if self.hist is None:
            self.hist = torch.zeros(self.max.numel() * self.n_bins, dtype=torch.int64, device=f.device)
        rows, cols = torch.nonzero(f > 0, as_tuple=True)
        if not rows.numel():
            return
        top = self.max[cols]
        b = torch.ceil(f[rows, cols].float() / top * self.n_bins).long().clamp_(1, self.n_bins) - 1
        self.hist += torch.bincount(cols * self.n_bins + b, minlength=self.hist.numel())

    def table(self) -> pd.DataFrame:
        """One row per latent: feature_id, n_fired, density, max_activation, mean_activation (NaN for a latent
        that never fired: it has no firing tokens to average), hist (int32 [n_bins], when the second pass ran)."""
        if self.count is None:
            raise ValueError("no codes were scanned")
        count = to_numpy(self.count)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(count > 0, to_numpy(self.total) / np.maximum(count, 1), np.nan)
        out = pd.DataFrame({"feature_id": np.arange(count.size), "n_fired": count,
                            "density": count / max(self.n_tokens, 1), "max_activation": to_numpy(self.max),
                            "mean_activation": mean})
        if self.hist is not None:
            h = to_numpy(self.hist).reshape(-1, self.n_bins).astype(np.int32)
            out["hist"] = list(h)
        return out


def peak_span(peak: int, n_pos: int, length: int) -> tuple[int, int]:
    """[start, end) of `length` positions (at most `n_pos`) of a window of `n_pos` that hold `peak` three quarters of
    the way in, clamped to the window: a context shows what leads up to the peak and a little of what follows."""
    length = min(length, n_pos)
    start = min(max(0, peak - (3 * length) // 4), n_pos - length)
    return start, start + length


def window_activations(blocks, positions_per_window: int, window_idx, feature_id, on_block=None) -> np.ndarray:
    """f_a(w, 1..P) for every (w, a) = (window_idx[e], feature_id[e]): float32 [E, P].

    blocks: dense codes in window-major order (whole windows per block, as `saeflow.evals.locality.top_events`
    reads them); on_block(f) is called with each block (e.g. LatentScan.add_histogram), so one pass serves both.
    """
    import torch

    w_all = np.asarray(window_idx, dtype=np.int64)
    a_all = np.asarray(feature_id, dtype=np.int64)
    out = np.full((w_all.size, positions_per_window), np.nan, dtype=np.float32)
    w0 = 0
    for f in blocks:
        f = torch.as_tensor(f)
        if on_block is not None:
            on_block(f)
        n_w = f.shape[0] // positions_per_window
        if n_w * positions_per_window != f.shape[0]:
            raise ValueError("blocks must hold whole windows (rows a multiple of positions_per_window)")
        sel = np.flatnonzero((w_all >= w0) & (w_all < w0 + n_w))
        if sel.size:
            f3 = f.reshape(n_w, positions_per_window, -1)
            wi = torch.as_tensor(w_all[sel] - w0, device=f.device)
            ai = torch.as_tensor(a_all[sel], device=f.device)
            out[sel] = to_numpy(f3[wi, :, ai], torch.float32)
        w0 += n_w
    missing = np.isnan(out).any(axis=1)
    if missing.any():
        raise ValueError(f"{int(missing.sum())} events name windows beyond the {w0} scanned "
                         f"(first: window {int(w_all[missing][0])})")
    return out


def context_activations(model, contexts, spec, feature_id, batch_size: int = 32) -> np.ndarray:
    """The latent's activation at every position after BOS of each context: float32 [E, N - 1] for token ids
    contexts [E, N] (each starting with BOS) and feature_id [E] (one forward per batch, no grad)."""
    import torch

    from saeflow.data.activations import site_batches

    a_all = torch.as_tensor(np.asarray(feature_id, dtype=np.int64))
    out = []
    for i, acts in site_batches(model, contexts, [spec.hook_in], batch_size, skip_bos=True):
        x = acts[spec.hook_in]
        with torch.no_grad():
            f = spec.codes(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
        ai = a_all[i: i + x.shape[0]].to(f.device)
        out.append(to_numpy(f[torch.arange(x.shape[0], device=f.device), :, ai], torch.float32))
    n = np.asarray(contexts).shape
    return np.concatenate(out) if out else np.zeros((0, n[1] - 1), np.float32)


def token_strings(tokenizer, ids) -> list[list[str]]:
    """Each token id decoded on its own, row by row (every distinct id decoded once). A byte-level BPE piece of a
    multi-byte character decodes to U+FFFD on its own; such a token is shown by its vocabulary entry instead
    (e.g. "âĢ"), which tells the pieces apart."""
    rows = [np.asarray(r, dtype=np.int64).reshape(-1) for r in ids]
    uniq = np.unique(np.concatenate(rows)) if rows else np.zeros(0, np.int64)
    lookup = token_texts(tokenizer, uniq)
    return [[lookup[i] for i in r.tolist()] for r in rows]


def token_texts(tokenizer, ids) -> dict[int, str]:
    """{id: its text} for distinct token ids, as ``token_strings`` shows them."""
    ids = [int(i) for i in ids]
    texts = tokenizer.batch_decode([[i] for i in ids], clean_up_tokenization_spaces=False)
    raw = getattr(tokenizer, "convert_ids_to_tokens", None)
    return {i: (raw(i) if "\ufffd" in t and raw is not None and raw(i) else t) for i, t in zip(ids, texts)}


def with_text(events: pd.DataFrame, ids, acts, tokenizer, peak_index) -> pd.DataFrame:
    """`events` with the columns a page renders: context (the token ids decoded whole), peak_token_text,
    peak_index, tokens (int32 ids), token_strs and acts (float32), one list per event aligned with its tokens.

    ids [E, n] int and acts [E, n] float: the context's tokens after BOS and the latent's activation at each;
    peak_index [E] (or one int for all): the peak's index in them."""
    ids = np.asarray(ids, dtype=np.int64)
    acts = np.asarray(acts, dtype=np.float32)
    if ids.shape != acts.shape or ids.shape[0] != len(events):
        raise ValueError(f"ids {ids.shape}, acts {acts.shape} and {len(events)} events must agree")
    peak = np.broadcast_to(np.asarray(peak_index, dtype=np.int64), (len(events),))
    strs = token_strings(tokenizer, ids)
    out = events.copy()
    out["context"] = tokenizer.batch_decode(ids.tolist(), clean_up_tokenization_spaces=False) if len(ids) else []
    out["peak_index"] = peak
    out["peak_token_text"] = [s[p] for s, p in zip(strs, peak)]
    out["tokens"] = list(ids.astype(np.int32))
    out["token_strs"] = strs
    out["acts"] = list(acts)
    return out
