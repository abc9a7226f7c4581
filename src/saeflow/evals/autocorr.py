"""Activation autocorrelation of SAE latents (spec/metrics.md, "Activation autocorrelation").

For latent a and a document of length n with activations f(t), t = 0..n-1, mu = mean_t f(t) (the mean of
*that* document) and, for tau = 0..max_lag,

    num_a[tau] += sum_{t=0}^{n-1-tau} (f(t) - mu)(f(t+tau) - mu)
    den_a      += sum_{t=0}^{n-1}     (f(t) - mu)^2

accumulated over documents (pooled sums, per-document means); rho_a(tau) = num_a[tau] / den_a, NaN where
den_a == 0 (a latent constant within every document). Documents shorter than tau + 1 add nothing to
num[tau]. Plus: firing density (fraction of tokens with f > 0), the autocorrelation length (first lag
where rho drops below 1/e), top activating (document, position) per latent with +-radius activation
strips divided by the peak value, and the seed-card output layout (feature_activation_autocorr).
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["AutocorrAccumulator", "autocorr_length", "select_latents", "TopExamples", "write_outputs"]


class AutocorrAccumulator:
    """Pooled autocorrelation over documents: for latent a and a document with activations f(t), mu = mean f
    over that document, num[tau] += sum_t (f(t)-mu)(f(t+tau)-mu), den += sum_t (f(t)-mu)^2;
    rho(tau) = num[tau] / den. Also counts firing tokens (f > 0) and tokens.

    Sums are direct (one vectorised product per lag, float64), so they are exact up to float64 rounding.
    """

    def __init__(self, n_latents: int, max_lag: int):
        if int(n_latents) < 1:
            raise ValueError(f"n_latents must be >= 1, got {n_latents}")
        if int(max_lag) < 0:
            raise ValueError(f"max_lag must be >= 0, got {max_lag}")
        self.n_latents = int(n_latents)
        self.max_lag = int(max_lag)
        self.num = np.zeros((self.n_latents, self.max_lag + 1), dtype=np.float64)
        self.den = np.zeros(self.n_latents, dtype=np.float64)
        self.n_firing = np.zeros(self.n_latents, dtype=np.int64)
        self.n_tokens = 0
        self.n_docs = 0

    def add(self, f: np.ndarray) -> None:
        """Add one document's activations f [n_tokens, n_latents]."""
        f = np.asarray(f, dtype=np.float64)
        if f.ndim != 2 or f.shape[1] != self.n_latents:
            raise ValueError(f"f must have shape [n_tokens, {self.n_latents}], got {f.shape}")
        n = f.shape[0]
        if n == 0:
            return
        self.n_firing += (f > 0).sum(axis=0)
        self.n_tokens += n
        self.n_docs += 1
        g = f - f.mean(axis=0, keepdims=True)
        self.den += np.einsum("ta,ta->a", g, g)
        for tau in range(min(self.max_lag, n - 1) + 1):
            self.num[:, tau] += np.einsum("ta,ta->a", g[: n - tau], g[tau:])

    def rho(self) -> np.ndarray:
        """[n_latents, max_lag + 1]: num / den, NaN where den == 0."""
        out = np.full_like(self.num, np.nan)
        ok = self.den > 0
        out[ok] = self.num[ok] / self.den[ok, None]
        return out

    def density(self) -> np.ndarray:
        """Firing fraction per latent: #(f > 0) / #tokens (NaN before any token was added)."""
        if self.n_tokens == 0:
            return np.full(self.n_latents, np.nan)
        return self.n_firing / self.n_tokens


def autocorr_length(rho: np.ndarray) -> np.ndarray:
    """Per latent (row of rho [n_latents, max_lag + 1]): the first lag tau >= 1 with rho(tau) < 1/e, refined
    by linear interpolation between tau-1 and tau: ell = tau - 1 + (rho(tau-1) - 1/e) / (rho(tau-1) - rho(tau)).
    NaN if rho never drops below 1/e within max_lag (or the row is NaN)."""
    rho = np.asarray(rho, dtype=np.float64)
    if rho.ndim != 2:
        raise ValueError(f"rho must be 2-D [n_latents, max_lag + 1], got shape {rho.shape}")
    thr = np.exp(-1.0)
    out = np.full(rho.shape[0], np.nan)
    for a in range(rho.shape[0]):
        below = np.nonzero(rho[a, 1:] < thr)[0]
        if below.size == 0:
            continue
        tau = int(below[0]) + 1
        r0, r1 = rho[a, tau - 1], rho[a, tau]
        if not np.isfinite(r0) or r0 < thr:  # previous lag NaN: no interpolation possible
            out[a] = float(tau)
        else:
            out[a] = tau - 1 + (r0 - thr) / (r0 - r1)
    return out


def select_latents(density, lo: float, hi: float, max_n: int | None = None) -> np.ndarray:
    """Indices a with lo <= density[a] <= hi, sorted by density descending (ties: lower index first),
    at most max_n of them (all if None). NaN densities are never selected."""
    d = np.asarray(density, dtype=np.float64)
    if lo > hi:
        raise ValueError(f"lo must be <= hi, got lo={lo}, hi={hi}")
    if max_n is not None and int(max_n) < 0:
        raise ValueError(f"max_n must be >= 0 or None, got {max_n}")
    idx = np.nonzero((d >= lo) & (d <= hi))[0]
    idx = idx[np.argsort(-d[idx], kind="stable")]
    return idx if max_n is None else idx[: int(max_n)]


class TopExamples:
    """Top activating (document, position) per latent with +-radius activation strips.

    Per document, each latent contributes at most one event: its argmax position p (first on ties) with
    value v = f(p) (only if v > 0). Per latent the k events with largest v are kept (ties: earlier doc first).
    Strip s(j) = f(p - radius + j) / v for j = 0..2*radius, so s(radius) == 1.0; positions outside the
    document are padded with 0 (not NaN), which reads as "no activation" in the peak-normalised trace.
    """

    def __init__(self, latents: np.ndarray, k: int, radius: int = 64):
        self.latents = np.asarray(latents, dtype=np.int64).reshape(-1)
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if int(radius) < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        if np.any(self.latents < 0):
            raise ValueError("latents must be non-negative indices")
        self.k = int(k)
        self.radius = int(radius)
        # per latent: list of (value, doc_id, pos, strip)
        self._ev: list[list[tuple[float, int, int, np.ndarray]]] = [[] for _ in self.latents]

    def add(self, doc_id: int, f: np.ndarray) -> None:
        """Add document doc_id with activations f [n_tokens, n_latents_total]."""
        f = np.asarray(f)
        if f.ndim != 2:
            raise ValueError(f"f must be 2-D [n_tokens, n_latents_total], got shape {f.shape}")
        if self.latents.size and self.latents.max() >= f.shape[1]:
            raise ValueError(f"f has {f.shape[1]} latents but latents contains {int(self.latents.max())}")
        n = f.shape[0]
        if n == 0 or self.latents.size == 0:
            return
        sub = f[:, self.latents].astype(np.float64)
        pos = np.argmax(sub, axis=0)
        val = sub[pos, np.arange(sub.shape[1])]
        r = self.radius
        for i in np.nonzero(val > 0)[0]:
            ev = self._ev[i]
            v, p = float(val[i]), int(pos[i])
            if len(ev) >= self.k and v <= ev[-1][0]:
                continue
            strip = np.zeros(2 * r + 1)
            lo, hi = max(0, p - r), min(n, p + r + 1)
            strip[lo - (p - r): hi - (p - r)] = sub[lo:hi, i] / v
            ev.append((v, int(doc_id), p, strip))
            ev.sort(key=lambda e: (-e[0], e[1]))
            del ev[self.k:]

    def table(self) -> pd.DataFrame:
        """feature_id, rank (0 = strongest), doc_id, peak_position, peak_value."""
        rows = [(int(a), rank, d, p, v) for a, ev in zip(self.latents, self._ev)
                for rank, (v, d, p, _) in enumerate(ev)]
        return pd.DataFrame(rows, columns=["feature_id", "rank", "doc_id", "peak_position", "peak_value"])

    def traces(self) -> dict[str, np.ndarray]:
        """{str(feature_id): [n_examples, 2*radius+1]} peak-normalised strips in rank order (centre == 1.0)."""
        w = 2 * self.radius + 1
        return {str(int(a)): (np.stack([e[3] for e in ev]) if ev else np.zeros((0, w)))
                for a, ev in zip(self.latents, self._ev)}


def _atomic_write(path: Path, write) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def write_outputs(out_dir, selected: pd.DataFrame, top: TopExamples, rho: np.ndarray, latents,
                  run_config: dict, entropy_targets: pd.DataFrame | None = None) -> None:
    """Write the feature_activation_autocorr layout into out_dir:

    selected_features.csv (as given; must hold feature_id and density), top_examples.csv (top.table()),
    activation_traces.npz (np.savez of top.traces(), no pickle), autocorr_curves.csv (long: feature_id, lag,
    rho), entropy_targets.csv (if given; needs feature_id and H_pos), feature_summary.csv (feature_id,
    density, autocorr_length, rho_1, rho_8 if max_lag >= 8, mean_H_pos if entropy_targets given),
    run_config.json. rho is the full [n_latents_total, max_lag + 1] matrix (AutocorrAccumulator.rho());
    `latents` are the row indices reported.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    latents = np.asarray(latents, dtype=np.int64).reshape(-1)
    rho = np.asarray(rho, dtype=np.float64)
    if rho.ndim != 2:
        raise ValueError(f"rho must be 2-D [n_latents_total, max_lag + 1], got shape {rho.shape}")
    if latents.size and latents.max() >= rho.shape[0]:
        raise ValueError(f"latents index {int(latents.max())} out of range for rho with {rho.shape[0]} rows")
    for col in ("feature_id", "density"):
        if col not in selected.columns:
            raise ValueError(f"selected must have a '{col}' column")
    if entropy_targets is not None:
        for col in ("feature_id", "H_pos"):
            if col not in entropy_targets.columns:
                raise ValueError(f"entropy_targets must have a '{col}' column")
    max_lag = rho.shape[1] - 1
    r = rho[latents]

    def csv(df, name):
        _atomic_write(out / name, lambda p: df.to_csv(p, index=False))

    csv(selected, "selected_features.csv")
    csv(top.table(), "top_examples.csv")
    _atomic_write(out / "activation_traces.npz", lambda p: np.savez(p, **top.traces()))
    curves = pd.DataFrame({"feature_id": np.repeat(latents, max_lag + 1),
                           "lag": np.tile(np.arange(max_lag + 1), latents.size),
                           "rho": r.reshape(-1)})
    csv(curves, "autocorr_curves.csv")
    dens = selected.set_index("feature_id")["density"]
    summary = pd.DataFrame({"feature_id": latents,
                            "density": dens.reindex(latents).to_numpy(dtype=float),
                            "autocorr_length": autocorr_length(r) if latents.size else np.zeros(0),
                            "rho_1": r[:, 1] if max_lag >= 1 else np.nan})
    if max_lag >= 8:
        summary["rho_8"] = r[:, 8]
    if entropy_targets is not None:
        csv(entropy_targets, "entropy_targets.csv")
        h = entropy_targets.groupby("feature_id")["H_pos"].mean()
        summary["mean_H_pos"] = h.reindex(latents).to_numpy(dtype=float)
    csv(summary, "feature_summary.csv")
    _atomic_write(out / "run_config.json",
                  lambda p: p.write_text(json.dumps(run_config, indent=2, sort_keys=True, default=str)))
