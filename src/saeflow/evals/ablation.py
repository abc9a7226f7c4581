"""Causal ablation of a latent set with the dictionary spliced in and the error term kept, against seeded
null sets of the same size (InterpGPT, seed 003: 5-seed nulls).

At the site (a TransformerLens hook) with activation x [b, T, d] and codes f = encode(x):

    x'  = x + decode(f') - decode(f)        f'_S = 0 (zero) or mean_f[S] (mean); f'_i = f_i otherwise

which equals decode(f') + (x - decode(f)) (the reconstruction of the edited codes plus the kept error
term) but is computed as a difference, so that with nothing ablated (f' = f) the added term is exactly 0
and the logits are the clean ones bit for bit. BOS (position 0) is never edited.

Task metric (per window w, labelled y_w in {0, 1}): the class-consistent logit margin
    m(w) = s_w mean_{t >= 1} [ mean_{a in A} logit_t(a) - mean_{b in B} logit_t(b) ],  s_w = +1 if y_w else -1
with A, B two token sets (the tokens most over-represented in positive / negative train windows).
The effect of ablating S is the mean drop  m_clean - m_ablated  over the windows; the null is the same
drop for ``n_null`` seeded random sets of |S| latents (among the live ones, S excluded); reported with its
quantile among them (ties count half) and z = (effect - mean null) / sd null.
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from saeflow.tensors import to_numpy

MODES = ("zero", "mean")


def splice_hook(dict_module, latents=None, mode: str = "zero", mean_codes=None):
    """A TransformerLens hook (act [b, T, d] -> act') applying the edit of the module docstring to
    positions 1..T-1; ``latents`` None or empty: no edit (the hook returns act unchanged, same tensor)."""
    import torch

    from saeflow.dictionaries.codes import decode, encode

    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    if latents is None or len(latents) == 0:
        return lambda act, hook=None: act
    idx = torch.as_tensor(np.asarray(latents), dtype=torch.long)
    if mode == "mean" and mean_codes is None:
        raise ValueError("mode 'mean' needs mean_codes (the latents' mean activation)")

    def hook(act, hook=None):
        x = act[:, 1:]
        b, t, d = x.shape
        f = encode(dict_module, x.reshape(-1, d))
        g = f.clone()
        i = idx.to(f.device)
        g[:, i] = 0 if mode == "zero" else torch.as_tensor(mean_codes, dtype=f.dtype, device=f.device)[i]
        delta = (decode(dict_module, g) - decode(dict_module, f)).reshape(b, t, d)
        out = act.clone()
        out[:, 1:] = x + delta.to(act.dtype)
        return out

    return hook


@contextmanager
def ablated(model, hook_name: str, dict_module, latents=None, mode: str = "zero", mean_codes=None):
    """Run the body with ``splice_hook`` at ``hook_name``."""
    with model.hooks(fwd_hooks=[(hook_name, splice_hook(dict_module, latents, mode, mean_codes))]):
        yield


def answer_tokens(tokens, is_positive, d_vocab: int, n: int = 20) -> tuple[set, set]:
    """(A, B): the n token ids most over-represented in the positive windows relative to the negative ones,
    and the n most under-represented, by the add-one smoothed log ratio of their frequencies in
    ``tokens[is_positive]`` and ``tokens[~is_positive]`` (ties: argsort order)."""
    tokens, pos = np.asarray(tokens), np.asarray(is_positive, dtype=bool)
    counts = [np.bincount(tokens[m].ravel(), minlength=d_vocab) + 1.0 for m in (pos, ~pos)]
    ratio = np.log(counts[0] / counts[0].sum()) - np.log(counts[1] / counts[1].sum())
    return set(np.argsort(-ratio)[:n].tolist()), set(np.argsort(ratio)[:n].tolist())


def class_margin(model, tokens, labels, a_ids, b_ids, batch_size: int = 32) -> np.ndarray:
    """m(w) of the module docstring for every window (float64 [n]), under whatever hooks are active."""
    import torch

    a = torch.as_tensor(sorted(a_ids), dtype=torch.long)
    b = torch.as_tensor(sorted(b_ids), dtype=torch.long)
    sign = np.where(np.asarray(labels) == 1, 1.0, -1.0)
    out = []
    t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    for i in range(0, len(t), batch_size):
        with torch.no_grad():
            logits = model(t[i: i + batch_size].to(model.cfg.device))[:, 1:].double()
        m = logits[..., a.to(logits.device)].mean(-1) - logits[..., b.to(logits.device)].mean(-1)
        out.append(to_numpy(m.mean(1)))
    return np.concatenate(out) * sign


def ablation_with_nulls(model, hook_name: str, dict_module, tokens, labels, a_ids, b_ids, latents, alive,
                        n_null: int = 5, mode: str = "zero", mean_codes=None, seed: int = 0,
                        batch_size: int = 32) -> dict:
    """Effect of ablating ``latents`` vs ``n_null`` seeded random sets of the same size drawn from ``alive``
    minus ``latents``: {"k", "effect", "null" (list), "null_mean", "null_sd", "quantile", "z",
    "clean_margin", "n_windows", "mode"} (effect and nulls: mean drop of m over the windows)."""
    latents = np.asarray(sorted(int(i) for i in latents))
    pool = np.setdiff1d(np.asarray(alive), latents)
    if len(pool) < len(latents):
        raise ValueError(f"only {len(pool)} live latents outside the ablated set of {len(latents)}: no null set")
    clean = class_margin(model, tokens, labels, a_ids, b_ids, batch_size)

    def drop(S):
        with ablated(model, hook_name, dict_module, S, mode, mean_codes):
            return float((clean - class_margin(model, tokens, labels, a_ids, b_ids, batch_size)).mean())

    g = np.random.default_rng(seed)
    effect = drop(latents)
    null = np.array([drop(np.sort(g.choice(pool, len(latents), replace=False))) for _ in range(n_null)])
    sd = float(null.std(ddof=1)) if n_null > 1 else float("nan")
    return {"k": len(latents), "effect": effect, "null": null.tolist(), "null_mean": float(null.mean()),
            "null_sd": sd, "quantile": float((null < effect).mean() + 0.5 * (null == effect).mean()),
            "z": (effect - float(null.mean())) / sd if sd and sd > 0 else float("nan"),
            "clean_margin": float(clean.mean()), "n_windows": len(clean), "mode": mode}
