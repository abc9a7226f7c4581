"""Activation caching and streaming.

Layout of a cache artefact:

    <site>/shard_00000.safetensors     tensor "x": [n_tokens, d] in the configured dtype
    <site>/index.json                  shard names and token counts
    stats.json                         per site: n_tokens, d, mean (vector), mean squared norm, mean norm

One forward per batch captures every requested site and stops after the deepest layer needed. Rows
are (window, position) pairs in window-major order with BOS positions left out, identical across
sites, so an MLP-input shard and its MLP-output shard are row-aligned. Memory is bounded by one shard
per site, whatever the corpus size.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from saeflow.tensors import to_numpy

DTYPES = ("float16", "bfloat16", "float32")


def site_layer(site: str) -> int:
    m = re.match(r"blocks\.(\d+)\.", site)
    if not m:
        raise ValueError(f"site {site!r} is not a TransformerLens block hook (blocks.<L>.<hook>)")
    return int(m.group(1))


class _SiteWriter:
    def __init__(self, root: Path, site: str, dtype, shard_tokens: int):
        self.site = site
        self.dir = root / site
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dtype, self.shard_tokens = dtype, shard_tokens
        self.buf: list = []
        self.n_buf = 0
        self.shards: list[dict] = []
        self.sum = None
        self.sq_norm = 0.0
        self.norm = 0.0
        self.n = 0

    def add(self, x) -> None:
        x64 = x.double()
        self.sum = x64.sum(0) if self.sum is None else self.sum + x64.sum(0)
        norms = x64.norm(dim=-1)
        self.sq_norm += float((norms ** 2).sum())
        self.norm += float(norms.sum())
        self.n += x.shape[0]
        self.buf.append(x.to(self.dtype))
        self.n_buf += x.shape[0]
        while self.n_buf >= self.shard_tokens:
            self._flush(self.shard_tokens)

    def _flush(self, n: int) -> None:
        import torch
        from safetensors.torch import save_file

        allx = torch.cat(self.buf)
        out, rest = allx[:n], allx[n:]
        name = f"shard_{len(self.shards):05d}.safetensors"
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).any(-1).sum())
            raise FloatingPointError(
                f"cache site {self.site}, {name}: {bad} of {out.shape[0]} token rows hold non-finite activations"
                + (f" after the cast to {self.dtype} (an overflow: use cache.dtype float32 or bfloat16)"
                   if self.dtype == torch.float16 else ""))
        save_file({"x": out.contiguous()}, str(self.dir / name))
        self.shards.append({"file": name, "n_tokens": int(out.shape[0])})
        self.buf, self.n_buf = ([rest] if rest.shape[0] else []), int(rest.shape[0])

    def close(self) -> dict:
        if self.n_buf:
            self._flush(self.n_buf)
        (self.dir / "index.json").write_text(json.dumps({"shards": self.shards}, indent=1, sort_keys=True))
        mean = (self.sum / self.n).tolist()
        return {"n_tokens": self.n, "d": len(mean), "mean": mean, "mean_sq_norm": self.sq_norm / self.n,
                "mean_norm": self.norm / self.n}


def cache_activations(model, tokens: np.ndarray, sites: list[str], out_dir: Path, dtype: str = "float16",
                      shard_tokens: int = 65536, batch_size: int = 32, exclude_bos: bool = True,
                      progress: bool = True) -> dict:
    """Run the model over `tokens` [n, T] once per batch and write every site's activations.

    Returns the per-site statistics also written to `stats.json`.
    """
    import torch
    from tqdm import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"cache dtype {dtype!r}; allowed values: {', '.join(DTYPES)}")
    if not sites:
        raise ValueError("sites: at least one hook site is required")
    out_dir = Path(out_dir)
    stop = max(site_layer(s) for s in sites) + 1
    writers = {s: _SiteWriter(out_dir, s, getattr(torch, dtype), shard_tokens) for s in sites}
    captured: dict = {}

    def hook(act, hook):
        captured[hook.name] = act.detach()

    first = 1 if exclude_bos else 0
    t = torch.as_tensor(tokens, dtype=torch.long)
    with torch.no_grad():
        for i in tqdm(range(0, len(t), batch_size), desc="cache", disable=not progress, mininterval=5):
            captured.clear()
            model.run_with_hooks(t[i: i + batch_size], stop_at_layer=stop, return_type=None,
                                 fwd_hooks=[(s, hook) for s in sites])
            for s, w in writers.items():
                a = captured[s][:, first:]
                w.add(a.reshape(-1, a.shape[-1]).float())
    stats = {s: w.close() for s, w in writers.items()}
    (out_dir / "stats.json").write_text(json.dumps(stats, sort_keys=True))
    return stats


def load_shard(path: Path | str):
    """Tensor "x" of one cached shard (float32); a truncated or unreadable file fails naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))["x"].float()
    except (SafetensorError, KeyError, OSError) as e:
        raise ValueError(f"cache shard {path} is unreadable ({type(e).__name__}: {e}); "
                         "run `saeflow verify --remove`, then rerun") from None


def read_index(cache_dir: Path, site: str) -> list[dict]:
    path = Path(cache_dir) / site / "index.json"
    if not path.is_file():
        available = sorted(p.name for p in Path(cache_dir).iterdir() if p.is_dir())
        raise ValueError(f"site {site!r} is not in cache {cache_dir}; available: {', '.join(available)}")
    return json.loads(path.read_text())["shards"]


def batch_stream(cache_dir: Path, site_in: str, site_out: str | None, batch_size: int, seed: int,
                 max_tokens: int | None = None) -> Callable[[], Iterator]:
    """A factory of iterators over float32 (x, y) batches (y None without `site_out`).

    Each call starts a new epoch: shard order and rows within a shard are shuffled with a seed that
    advances per epoch; x and y rows stay aligned. Only one shard per site is in memory at a time.
    With `max_tokens`, only the first rows (in cache order) are used, e.g. to hold out a check batch.
    """
    import torch

    cache_dir = Path(cache_dir)
    shards = read_index(cache_dir, site_in)
    if site_out is not None and [s["n_tokens"] for s in read_index(cache_dir, site_out)] != [s["n_tokens"] for s in shards]:
        raise ValueError(f"sites {site_in} and {site_out} are not row-aligned in {cache_dir}")
    epoch = [0]

    def load(site, name):
        return load_shard(cache_dir / site / name)

    def gen():
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch[0])
        epoch[0] += 1
        for j in torch.randperm(len(shards), generator=g).tolist():
            x = load(site_in, shards[j]["file"])
            y = load(site_out, shards[j]["file"]) if site_out else None
            perm = torch.randperm(x.shape[0], generator=g)
            for i in range(0, x.shape[0] - batch_size + 1, batch_size):
                idx = perm[i: i + batch_size]
                yield x[idx], (y[idx] if y is not None else None)

    return gen


def first_rows(cache_dir: Path, site: str, n: int):
    """The first `n` cached rows of a site (float32), read shard by shard."""
    import torch

    out, have = [], 0
    for s in read_index(cache_dir, site):
        x = load_shard(Path(cache_dir) / site / s["file"])
        out.append(x[: n - have])
        have += out[-1].shape[0]
        if have >= n:
            break
    return torch.cat(out)


def iter_window_blocks(cache_dir: Path, site: str, positions_per_window: int, windows_per_block: int = 64):
    """Cached rows of a site in cache order, in blocks of whole windows (float32 [n * positions, d]).

    Rows are window-major with `positions_per_window` rows per window (BOS excluded), so a block of
    `windows_per_block` windows is that many times `positions_per_window` consecutive rows, whatever the
    shard boundaries. One shard plus one block is in memory at a time.
    """
    import torch

    want = positions_per_window * windows_per_block
    rest = None
    for s in read_index(cache_dir, site):
        x = load_shard(Path(cache_dir) / site / s["file"])
        x = x if rest is None else torch.cat([rest, x])
        n = (x.shape[0] // want) * want
        for i in range(0, n, want):
            yield x[i: i + want]
        rest = x[n:]
    if rest is not None and rest.shape[0]:
        if rest.shape[0] % positions_per_window:
            raise ValueError(f"cache {cache_dir} site {site}: {rest.shape[0]} trailing rows are not whole windows")
        yield rest


def site_batches(model, tokens, hooks: list[str], batch_size: int = 32, skip_bos: bool = True,
                 desc: str | None = None) -> Iterator[tuple[int, dict]]:
    """Yield (i, {hook: activation [b, T', d]}) for the batches tokens[i: i + batch_size] of [n, T] token ids,
    T' = T - 1 (positions 1..T-1, BOS left out) with skip_bos, else T. No grad; one forward per batch,
    stopping after the deepest hook's block. desc: show a tqdm progress bar with this label."""
    import torch
    from tqdm import tqdm

    stop = max(site_layer(h) for h in hooks) + 1
    t = torch.as_tensor(tokens, dtype=torch.long)
    for i in tqdm(range(0, len(t), batch_size), desc=desc, disable=desc is None, mininterval=5):
        with torch.no_grad():  # not held across the yield: the caller's grad mode stays its own
            _, cache = model.run_with_cache(t[i: i + batch_size], names_filter=list(hooks), stop_at_layer=stop)
        yield i, {h: cache[h][:, 1:] if skip_bos else cache[h] for h in hooks}


def pooled_features(model, tokens: np.ndarray, hooks: list[str], encoders: dict, batch_size: int = 32,
                    progress: bool = True) -> tuple[dict, dict]:
    """Mean over positions 1..T-1 (BOS excluded) of each hook's activation and of each encoder's codes.

    encoders: {name: (hook, encode)}; returns ({hook: [n, d]}, {name: [n, d_sae]}) as float64 numpy.
    One forward per batch, stopping after the deepest hook's block.
    """
    import torch

    raw = {h: [] for h in hooks}
    codes = {n: [] for n in encoders}
    needed = list(dict.fromkeys([*hooks, *(h for h, _ in encoders.values())]))
    for _, acts in site_batches(model, tokens, needed, batch_size, desc="pooled features" if progress else None):
        for h in hooks:
            raw[h].append(to_numpy(acts[h].double().mean(1)))
        with torch.no_grad():
            for n, (h, encode) in encoders.items():
                x = acts[h]
                f = encode(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
                codes[n].append(to_numpy(f.double().mean(1)))
    return ({h: np.concatenate(v) for h, v in raw.items()}, {n: np.concatenate(v) for n, v in codes.items()})
