"""Locality analyses built on `saeflow.evals.influence` (spec: metrics.md, "Feature influence and its entropy").

- `entropy_vs_depth`: windows sampled with a recorded seed; per window and layer the entropy, influence
  vector and activations of every latent active at the last position, plus the token vector.
- `top_events`: top-activating events per latent from cached activations: at most one event per window
  per latent (its argmax over positions), then the top-k events per latent by activation.
- `h_pos`: H_a on the window of N tokens that ends at each event's peak token (the peak is the last
  position). A context of N tokens is `[BOS] + the N-1 tokens ending at the peak`, because the models
  here always see BOS first; events are only taken at positions with N-1 real tokens before them.
- `ctxlen_sweep`: one fixed text, the query token fixed at the end, windows of the last L tokens.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from saeflow.data.activations import site_batches
from saeflow.evals.influence import DictSpec, window_influence
from saeflow.tensors import to_numpy


def _site_codes(model, tokens, dicts: dict[int, DictSpec]) -> dict[int, "torch.Tensor"]:
    """Dense codes f [T, d_sae] at every position of one window, per layer (one forward, no grad)."""
    import torch

    names = {L: s.hook_in for L, s in dicts.items()}
    _, acts = next(site_batches(model, tokens[None], list(names.values()), skip_bos=False))
    with torch.no_grad():
        return {L: dicts[L].codes(acts[n][0]) for L, n in names.items()}


def entropy_vs_depth(model, tokens: np.ndarray, start_idx: np.ndarray, dicts: dict[int, DictSpec],
                     threshold: float, n_windows: int, seed: int, token_vector: bool = True,
                     memory_budget_mb: float = 512, progress: bool = True):
    """Sample `n_windows` of the given windows (seeded, without replacement) and compute, per layer:

    features: rows (batch_idx, window_idx, start_idx, feature_id, entropy, activation) for every latent
      with f_a(T-1) > threshold; arrays["feature_influences"] [rows, T] (J_a), ["feature_activations"]
      [rows, T] (f_a at every position of the window), aligned with the rows;
    windows: rows (batch_idx, window_idx, start_idx, token_vector_entropy, num_active_features) and
      arrays["token_vector_influence"] [n_windows, T].
    Returns {layer: {"features": DataFrame, "windows": DataFrame, "arrays": {name: ndarray}}}.
    """
    import torch
    from tqdm import tqdm

    if not 1 <= n_windows <= len(tokens):
        raise ValueError(f"n_windows must be in 1..{len(tokens)} (windows available); got {n_windows}")
    chosen = np.sort(np.random.default_rng(seed).choice(len(tokens), n_windows, replace=False))
    out = {L: {"f": [], "w": [], "J": [], "A": [], "R": []} for L in dicts}
    for b, w in enumerate(tqdm(chosen, desc="entropy vs depth", disable=not progress, mininterval=5)):
        t = torch.as_tensor(tokens[w], dtype=torch.long)
        res = window_influence(model, t, dicts, threshold, token_vector=token_vector, memory_budget_mb=memory_budget_mb)
        codes = _site_codes(model, t, dicts)
        for L, r in res.items():
            o = out[L]
            for a, h, act in zip(r.latents, r.H, r.activations):
                o["f"].append((b, int(w), int(start_idx[w]), int(a), float(h), float(act)))
            o["J"].append(r.J)
            o["A"].append(to_numpy(codes[L][:, torch.as_tensor(r.latents, device=codes[L].device)].T, torch.float32))
            o["w"].append((b, int(w), int(start_idx[w]), r.H_token if r.H_token is not None else np.nan, len(r.latents)))
            if r.R is not None:
                o["R"].append(r.R)
    T = tokens.shape[1]
    result = {}
    for L, o in out.items():
        arrays = {"feature_influences": np.concatenate(o["J"]).astype(np.float32) if o["f"] else np.zeros((0, T), np.float32),
                  "feature_activations": np.concatenate(o["A"]).astype(np.float32) if o["f"] else np.zeros((0, T), np.float32)}
        if o["R"]:
            arrays["token_vector_influence"] = np.stack(o["R"]).astype(np.float32)
        result[L] = {
            "features": pd.DataFrame(o["f"], columns=["batch_idx", "window_idx", "start_idx", "feature_id", "entropy",
                                                      "activation"]),
            "windows": pd.DataFrame(o["w"], columns=["batch_idx", "window_idx", "start_idx", "token_vector_entropy",
                                                     "num_active_features"]),
            "arrays": arrays,
        }
    return result


def top_events(blocks, positions_per_window: int, k: int, min_pos: int = 1) -> pd.DataFrame:
    """Top-activating events per latent, at most one per window.

    blocks: iterable of dense codes [n_windows_in_block * positions_per_window, d_sae] in window-major
      order (row r of a window = position r + 1, BOS excluded), consecutive blocks covering whole windows.
    An event of latent a in window w is argmax over positions p >= min_pos of f_a(w, p); the k events with
    the largest activation (> 0) are kept per latent. Returns rows (feature_id, event_idx, window_idx,
    pos, activation) sorted by feature_id, then activation descending (event_idx = rank).
    """
    import torch

    best_v = best_w = best_p = None
    w0 = 0
    first_row = max(0, min_pos - 1)
    for f in blocks:
        f = torch.as_tensor(f)
        n_w = f.shape[0] // positions_per_window
        if n_w * positions_per_window != f.shape[0]:
            raise ValueError("blocks must hold whole windows (rows a multiple of positions_per_window)")
        f = f.reshape(n_w, positions_per_window, -1)[:, first_row:]
        v, p = f.max(dim=1)                                   # per window and latent: its argmax event
        w = torch.arange(w0, w0 + n_w, device=v.device).unsqueeze(1).expand_as(v)
        p = p + first_row + 1
        if best_v is not None:
            v, w, p = torch.cat([best_v, v]), torch.cat([best_w, w]), torch.cat([best_p, p])
        kk = min(k, v.shape[0])
        top_v, idx = v.topk(kk, dim=0)
        best_v, best_w, best_p = top_v, w.gather(0, idx), p.gather(0, idx)
        w0 += n_w
    if best_v is None:
        return pd.DataFrame(columns=["feature_id", "event_idx", "window_idx", "pos", "activation"])
    kk, d = best_v.shape
    rows = pd.DataFrame({"feature_id": np.tile(np.arange(d), kk), "event_idx": np.repeat(np.arange(kk), d),
                         "window_idx": to_numpy(best_w.reshape(-1)), "pos": to_numpy(best_p.reshape(-1)),
                         "activation": to_numpy(best_v.reshape(-1), torch.float32)})
    rows = rows[rows["activation"] > 0]
    return rows.sort_values(["feature_id", "event_idx"]).reset_index(drop=True)


def h_pos(model, tokens: np.ndarray, events: pd.DataFrame, spec: DictSpec, layer: int, ctx_lens: list[int],
          bos_id: int, threshold: float, progress: bool = True) -> dict[int, tuple[pd.DataFrame, dict]]:
    """H_pos of every event for every context length N in `ctx_lens`.

    Returns {N: (rows, influences)}: rows (feature_id, event_idx, window_idx, pos, activation, H_pos,
    peak_token_idx, peak_token, peak_value, sum_J, status) with status "ok", or "inactive" when the latent
    does not fire above threshold at the peak in the truncated context (H_pos NaN); influences maps the row
    index (str) to J_a [N]. peak_token_idx is the peak's position in its source window, peak_value the
    latent's activation there on the N-token context.
    """
    import torch
    from tqdm import tqdm

    out = {}
    for N in ctx_lens:
        if N < 2:
            raise ValueError(f"ctx_lens entries must be >= 2 (BOS + 1 token); got {N}")
        bad = events["pos"] < N - 1
        if bad.any():
            raise ValueError(f"events at positions < {N - 1} cannot have a context of {N} tokens; "
                             "scan with min_pos >= max(ctx_lens) - 1")
        rows, infl = [], {}
        for i, e in enumerate(tqdm(events.itertuples(index=False), total=len(events), desc=f"H_pos ctx{N}",
                                   disable=not progress, mininterval=5)):
            win = tokens[e.window_idx]
            ctx = torch.as_tensor(np.concatenate([[bos_id], win[e.pos - N + 2: e.pos + 1]]), dtype=torch.long)
            a = int(e.feature_id)

            def only_a(x, a=a):
                f = spec.codes(x)
                mask = torch.zeros(f.shape[-1], dtype=f.dtype, device=f.device)
                mask[a] = 1
                return f * mask  # J of latent a alone: one VJP instead of one per active latent

            r = window_influence(model, ctx, {layer: DictSpec(spec.module, spec.hook_in, only_a)}, threshold,
                                 token_vector=False, method="latent")[layer]
            row = {"feature_id": a, "event_idx": int(e.event_idx), "window_idx": int(e.window_idx), "pos": int(e.pos),
                   "activation": float(e.activation), "peak_token_idx": int(e.pos), "peak_token": int(win[e.pos])}
            if len(r.latents):
                J = r.J[0]
                infl[str(len(rows))] = J.astype(np.float32)
                row.update(H_pos=float(r.H[0]), peak_value=float(r.activations[0]), sum_J=float(J.sum()), status="ok")
            else:
                row.update(H_pos=np.nan, peak_value=np.nan, sum_J=np.nan, status="inactive")
            rows.append(row)
        out[N] = (pd.DataFrame(rows), infl)
    return out


def ctxlen_sweep(model, text_tokens: np.ndarray, dicts: dict[int, DictSpec], threshold: float,
                 lengths: list[int], bos_id: int, memory_budget_mb: float = 512, progress: bool = True):
    """Per-latent entropy of the query (last) token for windows `[BOS] + last L-1 tokens`, L in lengths.

    Returns (features: rows (layer, ctx_len, feature_id, entropy, activation), token: rows (layer, ctx_len,
    token_vector_entropy, num_active_features, log2_ctx_len)).
    """
    import torch
    from tqdm import tqdm

    body = np.asarray(text_tokens)
    body = body[1:] if body[0] == bos_id else body
    feats, tok = [], []
    for L in tqdm(lengths, desc="ctx-len sweep", disable=not progress, mininterval=5):
        if not 2 <= L <= len(body) + 1:
            raise ValueError(f"context length {L} must be in 2..{len(body) + 1} for this text")
        ctx = torch.as_tensor(np.concatenate([[bos_id], body[len(body) - (L - 1):]]), dtype=torch.long)
        for layer, r in window_influence(model, ctx, dicts, threshold, token_vector=True,
                                         memory_budget_mb=memory_budget_mb).items():
            feats += [(layer, L, int(a), float(h), float(v)) for a, h, v in zip(r.latents, r.H, r.activations)]
            tok.append((layer, L, r.H_token, len(r.latents), float(np.log2(L))))
    return (pd.DataFrame(feats, columns=["layer", "ctx_len", "feature_id", "entropy", "activation"]),
            pd.DataFrame(tok, columns=["layer", "ctx_len", "token_vector_entropy", "num_active_features", "log2_ctx_len"]))


def mean_entropy_per_latent(features: pd.DataFrame) -> pd.DataFrame:
    """Per-latent summary: mean entropy over the windows where the latent was active."""
    g = features.groupby("feature_id")
    return pd.DataFrame({"mean_entropy": g["entropy"].mean(), "n_windows": g.size(),
                         "mean_activation": g["activation"].mean()}).reset_index()



def load_layer_dicts(dict_dirs: dict[int, "Path"], device: str = "cpu") -> dict[int, DictSpec]:
    """{layer: DictSpec} from dictionary artefacts (sae-lens format, site from the manifest)."""
    from pathlib import Path

    from saeflow.dictionaries import formats
    from saeflow.workflow import store

    specs = {}
    for layer, d in dict_dirs.items():
        m = store.read_manifest(d)
        sae = formats.load_saelens(Path(d) / m["formats"]["saelens"]).to(device)
        specs[layer] = DictSpec(sae, m["params"]["hook_in"])
    return specs


def select_latents(events: pd.DataFrame, n: int) -> list[int]:
    """The n latents with the most events (ties: larger top activation, then lower id)."""
    g = events.groupby("feature_id").agg(n_events=("event_idx", "size"), top=("activation", "max")).reset_index()
    g = g.sort_values(["n_events", "top", "feature_id"], ascending=[False, False, True])
    return g["feature_id"].head(n).tolist()


def token_kinds(tokenizer, meta: dict) -> dict[int, str]:
    """Planted kind (echo / topic / filler) of every token that is one synthetic word."""
    kind_of = {w: "filler" for w in meta["words"]["filler"]}
    kind_of.update({w: "echo" for w in meta["words"]["echo"]})
    kind_of.update({w: "topic" for ws in meta["words"]["topic"] for w in ws})
    out = {}
    for tid in range(len(tokenizer)):
        word = tokenizer.decode([tid]).strip()
        if word in kind_of:
            out[tid] = kind_of[word]
    return out


def kind_contrast(rows: pd.DataFrame) -> dict:
    """Per latent: its majority planted kind and mean H_pos over its "ok" events; then echo vs topic
    latents compared by medians and a two-sided Mann-Whitney U test (scipy), with the test's power at larger
    sizes measured by resampling the observed latents (mann_whitney_power)."""
    from scipy.stats import mannwhitneyu

    ok = rows[rows["status"] == "ok"]
    per = ok.groupby("feature_id").agg(kind=("kind", lambda k: k.value_counts().index[0]), mean_H_pos=("H_pos", "mean"))
    res = {"n_latents": {k: int(v) for k, v in per["kind"].value_counts().items()},
           "median_H_pos": {k: float(v) for k, v in per.groupby("kind")["mean_H_pos"].median().items()},
           "per_latent": per.reset_index().to_dict(orient="list")}
    echo, topic = per[per["kind"] == "echo"]["mean_H_pos"], per[per["kind"] == "topic"]["mean_H_pos"]
    if len(echo) and len(topic):
        res["mann_whitney_p"] = float(mannwhitneyu(echo, topic, alternative="two-sided").pvalue)
        res["echo_lower_than_topic"] = bool(echo.median() < topic.median())
        if len(echo) >= 2 and len(topic) >= 2:
            # how many latents of each kind the observed difference needs to be significant
            pw = mann_whitney_power(echo, topic)
            res["n_per_kind_for_80pct_power"] = pw["n_for_80pct"]
            res["power_at_n"] = [{"n": n, "power": v} for n, v in pw["power"].items()]
    return res


POWER_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)


def mann_whitney_power(a, b, sizes=POWER_SIZES, n_sim: int = 400, alpha: float = 0.05, seed: int = 0) -> dict:
    """Power of the two-sided Mann-Whitney U test at n latents per group, measured by resampling the
    observed per-latent values: for each n, ``n_sim`` draws of n values from ``a`` and n from ``b`` (with
    replacement, numpy ``default_rng(seed)``); power(n) = fraction of draws with p < alpha. Returns
    {"power": {n: power}, "n_for_80pct": the smallest n of ``sizes`` with power >= 0.8, or None}."""
    from scipy.stats import mannwhitneyu

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"each group needs >= 2 values to resample, got {a.size} and {b.size}")
    g = np.random.default_rng(seed)
    power = {}
    for n in sizes:
        xa = a[g.integers(0, a.size, (n_sim, n))]
        xb = b[g.integers(0, b.size, (n_sim, n))]
        p = mannwhitneyu(xa, xb, axis=1, alternative="two-sided").pvalue
        power[int(n)] = float(np.mean(p < alpha))
    return {"power": power, "n_for_80pct": next((n for n, v in power.items() if v >= 0.8), None)}


def mean_h_pos(h_pos_dir, layer: int) -> tuple[int, pd.Series]:
    """(ctx, per latent its mean H_pos over its "ok" events) of an h_pos artefact's layer, at the node's
    longest context length."""
    from pathlib import Path

    from saeflow.workflow import store

    ctx = max(store.read_manifest(h_pos_dir)["params"]["ctx_lens"])
    rows = pd.read_parquet(Path(h_pos_dir) / f"layer{layer}/ctx{ctx}.parquet")
    return ctx, rows[rows["status"] == "ok"].groupby("feature_id")["H_pos"].mean()


def load_model_and_dicts(inputs: dict, layers: list[int], device: str = "cpu"):
    """(model, {layer: DictSpec}, windows arrays) from a locality node's upstream artefacts
    (roles `lm`, `windows` and `dict_L<layer>`)."""
    from safetensors.numpy import load_file

    from saeflow.models import lm

    model = lm.load_model(inputs["lm"] / "model", device)
    dicts = load_layer_dicts({L: inputs[f"dict_L{L}"] for L in layers}, device)
    return model, dicts, load_file(str(inputs["windows"] / "windows.safetensors"))
