"""Steering: add alpha * v at a hook site while the model runs, generate, and score what comes out
(metrics.md "Steering"; seed 002's interference sweep with the ctrl-steer-v2 controls of seed 000).

Directions v, unit norm, float32, on the model's device:
  latent         the chosen latent's decoder row W_dec[i] / ||W_dec[i]||
  diff_of_means  mean site activation over positive texts minus over negative texts, normalised (the
                 strong baseline: no dictionary needed)
  random_vector  a seeded standard-normal vector, normalised (drawn on the CPU from the recorded seed, so
                 the control is the same vector on every machine and device)
  random_latent  the decoder row of a seeded random latent that fires, other than the candidates

The scale: alpha counts multiples of the site's RMS norm r = sqrt(mean_t ||x_t||^2) over clean
activations (positions after BOS), so the added vector alpha * r * v has norm |alpha| r at every position
from `from_pos` on. alpha = 0 attaches no hook: logits and generations are the clean ones bit for bit.

Generation runs without a key-value cache, one full forward per new token, so the hook sees absolute
positions; prompts in a batch have equal length (no padding). Sampling draws from a torch.Generator on
the model's device seeded with (seed, batch index): every (direction, alpha) meets the same random
numbers, so their differences are paired.
"""

from __future__ import annotations

import ast
import re
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np

from saeflow.tensors import to_numpy

CONTROL_KINDS = ("random_vector", "random_latent")


_CHAT_SENTINEL = "\u2063SAEFLOW-PROMPT\u2063"  # invisible separator: no template or prompt holds it


def chat_wrap(tokenizer, prompts) -> np.ndarray:
    """Prompts [n, P] (position 0 the window's BOS, then P - 1 text tokens) as a one-turn chat:
    ``[BOS] + prefix + text + suffix``, where prefix and suffix are the tokens of the tokenizer's chat
    template rendered around a sentinel user message with ``add_generation_prompt=True`` (so the model
    continues as the assistant). The text tokens are kept as they are (not re-tokenised); a BOS that the
    template itself writes is dropped, as position 0 already holds it. Every row gets the same prefix and
    suffix, so the result is rectangular [n, P + len(prefix) + len(suffix)].
    Raises ValueError (naming steer.chat_template) when the tokenizer has no chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(f"steer.chat_template: the tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no "
                         "chat template; allowed values: false for this model")
    text = tokenizer.apply_chat_template([{"role": "user", "content": _CHAT_SENTINEL}], tokenize=False,
                                         add_generation_prompt=True)
    pre, post = text.split(_CHAT_SENTINEL)
    if tokenizer.bos_token and pre.startswith(tokenizer.bos_token):
        pre = pre[len(tokenizer.bos_token):]
    enc = [np.asarray(tokenizer.encode(t, add_special_tokens=False), dtype=np.int64) for t in (pre, post)]
    prompts = np.asarray(prompts, dtype=np.int64)
    n = len(prompts)
    return np.concatenate([prompts[:, :1], np.tile(enc[0], (n, 1)), prompts[:, 1:], np.tile(enc[1], (n, 1))], 1)


def unit(v):
    """v / ||v||; refuses a zero vector (a direction that cannot be steered along)."""
    import torch

    n = torch.linalg.vector_norm(v.float())
    if not torch.isfinite(n) or n == 0:
        raise ValueError(f"cannot normalise a direction of norm {float(n)}")
    return v.float() / n


def random_vector(d: int, seed: int, device) -> "torch.Tensor":
    import torch

    g = torch.Generator().manual_seed(int(seed))
    return unit(torch.randn(d, generator=g)).to(device)


def steering_hook(v, scale: float, from_pos: int = 0):
    """TransformerLens forward hook adding scale * v to act[:, from_pos:, :] (act: [batch, pos, d])."""
    delta = scale * v

    def hook(act, hook=None):
        if from_pos == 0:
            return act + delta.to(act.dtype)
        out = act.clone()
        out[:, from_pos:] += delta.to(act.dtype)
        return out

    return hook


@contextmanager
def steered(model, hook_name: str | None, v=None, scale: float = 0.0, from_pos: int = 0):
    """Run the body with scale * v added at `hook_name`; scale 0 (or no hook) runs the clean model."""
    if hook_name is None or scale == 0:
        yield
        return
    with model.hooks(fwd_hooks=[(hook_name, steering_hook(v, scale, from_pos))]):
        yield


def generate(model, prompts, max_new_tokens: int, *, greedy: bool = False, temperature: float = 1.0,
             seed: int = 0, batch_size: int = 32, steer: tuple | None = None):
    """Continuations [n, max_new_tokens] (int64 numpy) of prompts [n, P] (equal length, BOS first).

    Each new token is argmax (greedy) or drawn from softmax(logits / temperature) with the batch's
    generator (seed + batch index). steer: (hook_name, v, scale, from_pos) applied during every forward.
    """
    import torch

    t = torch.as_tensor(np.asarray(prompts), dtype=torch.long)
    if t.ndim != 2 or t.shape[0] == 0:
        raise ValueError(f"prompts must be a non-empty [n, P] array, got shape {tuple(t.shape)}")
    if t.shape[1] + max_new_tokens > model.cfg.n_ctx:
        raise ValueError(f"prompt length {t.shape[1]} + max_new_tokens {max_new_tokens} exceeds the model's "
                         f"n_ctx={model.cfg.n_ctx}")
    if not greedy and not temperature > 0:
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature!r}")
    device = model.cfg.device
    out = []
    ctx = steered(model, *steer) if steer else nullcontext()
    with torch.no_grad(), ctx:
        for b, i in enumerate(range(0, len(t), batch_size)):
            toks = t[i: i + batch_size].to(device)
            g = torch.Generator(device=device).manual_seed(int(seed) * 1_000_003 + b)
            for _ in range(max_new_tokens):
                logits = model(toks)[:, -1].float()
                if greedy:
                    nxt = logits.argmax(-1, keepdim=True)
                else:
                    nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=g)
                toks = torch.cat([toks, nxt], 1)
            out.append(to_numpy(toks[:, t.shape[1]:]))
    return np.concatenate(out).astype(np.int64)


def continuation_nll(model, prompts, continuations, batch_size: int = 32) -> np.ndarray:
    """Per sequence, the mean negative log-likelihood (nats) of the continuation tokens given the prompt
    and the tokens before them, under `model` as it runs (call it outside `steered`: the clean model).
    Perplexity = exp(nll)."""
    import torch

    p, c = np.asarray(prompts), np.asarray(continuations)
    full = torch.as_tensor(np.concatenate([p, c], 1), dtype=torch.long)
    P = p.shape[1]
    out = []
    with torch.no_grad():
        for i in range(0, len(full), batch_size):
            x = full[i: i + batch_size].to(model.cfg.device)
            logp = torch.log_softmax(model(x)[:, P - 1: -1].float(), -1)
            nll = -logp.gather(-1, x[:, P:, None])[..., 0].mean(1)
            out.append(to_numpy(nll, np.float64))
    return np.concatenate(out)


def last_token_margin(model, prompts, a_ids, b_ids, batch_size: int = 32, steer: tuple | None = None) -> np.ndarray:
    """Per prompt, max(logits[a_ids]) - max(logits[b_ids]) at the prompt's last position (seed 002's math
    logit margin), under steering when `steer` is given."""
    import torch

    t = torch.as_tensor(np.asarray(prompts), dtype=torch.long)
    a = torch.as_tensor(sorted(set(a_ids)), dtype=torch.long, device=model.cfg.device)
    b = torch.as_tensor(sorted(set(b_ids)), dtype=torch.long, device=model.cfg.device)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("both token sets of the logit margin must be non-empty")
    out = []
    ctx = steered(model, *steer) if steer else nullcontext()
    with torch.no_grad(), ctx:
        for i in range(0, len(t), batch_size):
            last = model(t[i: i + batch_size].to(model.cfg.device))[:, -1].float()
            out.append(to_numpy(last[:, a].max(-1).values - last[:, b].max(-1).values, np.float64))
    return np.concatenate(out)


# Text metrics of one generation (pure functions of the decoded string). None: not applicable (no block).

FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.S)


def python_valid(text: str) -> bool | None:
    """Every fenced code block (```lang\\n...```) parses as Python (ast.parse); None when there is none."""
    blocks = FENCE.findall(text)
    if not blocks:
        return None
    for code in blocks:
        try:
            ast.parse(code)
        except (SyntaxError, ValueError):
            return False
    return True


def latex_balanced(text: str) -> bool | None:
    """LaTeX delimiters balanced: an even number of `$$` and of single `$`, as many `\\(` as `\\)` and `\\[`
    as `\\]`, and \\begin{x} ... \\end{x} properly nested; None when the text has no LaTeX delimiter."""
    double = text.count("$$")
    single = text.replace("$$", "").count("$")
    opens, closes = text.count("\\(") + text.count("\\["), text.count("\\)") + text.count("\\]")
    envs = re.findall(r"\\(begin|end)\{([^}]*)\}", text)
    if not (double or single or opens or closes or envs):
        return None
    stack = []
    for kind, name in envs:
        if kind == "begin":
            stack.append(name)
        elif not stack or stack.pop() != name:
            return False
    return (double % 2 == 0 and single % 2 == 0 and text.count("\\(") == text.count("\\)")
            and text.count("\\[") == text.count("\\]") and not stack)


def latex_first(text: str) -> bool:
    """The response begins with a LaTeX delimiter (`$`, `\\[` or `\\(`) after leading whitespace."""
    return text.lstrip().startswith(("$", "\\[", "\\("))


# Picking candidate latents for a contrast


@dataclass
class ContrastStats:
    """Sums over the positions (after BOS) of positive and negative texts at one site."""

    code_sum: np.ndarray     # [2, d_sae] sum of codes (row 0: positive, 1: negative)
    fire_count: np.ndarray   # [2, d_sae] positions where the latent is active (code > 0)
    act_sum: np.ndarray      # [2, d_model] sum of site activations
    sq_norm_sum: float       # sum over all positions of ||x_t||^2
    n_tokens: np.ndarray     # [2]

    @property
    def rms_norm(self) -> float:
        return float(np.sqrt(self.sq_norm_sum / self.n_tokens.sum()))

    def diff_of_means(self) -> np.ndarray:
        return self.act_sum[0] / self.n_tokens[0] - self.act_sum[1] / self.n_tokens[1]


def contrast_stats(model, tokens, is_positive, hook: str, encode, batch_size: int = 32) -> ContrastStats:
    """One clean forward per batch of windows tokens [n, T]; is_positive [n] bool; encode: x [m, d] -> codes."""
    import torch

    from saeflow.data.activations import site_batches

    pos = np.asarray(is_positive, dtype=bool)
    if pos.all() or not pos.any():
        raise ValueError("a contrast needs both positive and negative texts")
    code_sum = fire = act_sum = None
    sq, n_tok = 0.0, np.zeros(2)
    for i, acts in site_batches(model, tokens, [hook], batch_size):
        x = acts[hook].float()
        with torch.no_grad():
            f = encode(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], x.shape[1], -1)
        if code_sum is None:
            code_sum, fire = np.zeros((2, f.shape[-1])), np.zeros((2, f.shape[-1]))
            act_sum = np.zeros((2, x.shape[-1]))
        sq += float(to_numpy(x.double().pow(2).sum()))
        for row, sel in ((0, pos[i: i + len(x)]), (1, ~pos[i: i + len(x)])):
            if sel.any():
                m = torch.as_tensor(sel, device=x.device)
                code_sum[row] += to_numpy(f[m].double().sum((0, 1)))
                fire[row] += to_numpy((f[m] > 0).sum((0, 1)), np.float64)
                act_sum[row] += to_numpy(x[m].double().sum((0, 1)))
                n_tok[row] += int(sel.sum()) * x.shape[1]
    return ContrastStats(code_sum, fire, act_sum, sq, n_tok)


def rank_candidates(stats: ContrastStats, n: int, min_freq: float = 0.0):
    """Latents ranked by class-mean difference mean_pos - mean_neg (codes averaged over positions), descending;
    ties by positive firing frequency, then lower id. Only latents firing on >= min_freq of positive
    positions. Returns a DataFrame of the top n: latent, mean_pos, mean_neg, diff, freq_pos, freq_neg."""
    import pandas as pd

    mean = stats.code_sum / stats.n_tokens[:, None]
    freq = stats.fire_count / stats.n_tokens[:, None]
    df = pd.DataFrame({"latent": np.arange(mean.shape[1]), "mean_pos": mean[0], "mean_neg": mean[1],
                       "diff": mean[0] - mean[1], "freq_pos": freq[0], "freq_neg": freq[1]})
    df = df[(df["freq_pos"] >= min_freq) & (df["freq_pos"] > 0)]
    df = df.sort_values(["diff", "freq_pos", "latent"], ascending=[False, False, True])
    return df.head(n).reset_index(drop=True)


def random_latent(stats: ContrastStats, exclude, seed: int) -> int:
    """A seeded random latent that fires somewhere in the contrast texts, not in `exclude`."""
    alive = np.flatnonzero(stats.fire_count.sum(0) > 0)
    pool = np.setdiff1d(alive, np.asarray(list(exclude), dtype=np.int64))
    if pool.size == 0:
        raise ValueError("no firing latent outside the candidates to use as the random-latent control")
    return int(np.random.default_rng(seed).choice(pool))


# Choosing the alpha and the effect with its control


def best_alpha(success: dict, ppl: dict, cap: float) -> tuple[float, bool]:
    """The alpha > 0 (towards the concept; negative alphas are swept for the curves) with the highest mean
    success among those whose mean perplexity is <= cap times the alpha = 0 perplexity (fluency-preserving);
    (0.0, False) when none is. success, ppl: {alpha: [units]}."""
    base = float(np.mean(ppl[0.0]))
    fluent = [a for a in success if a > 0 and float(np.mean(ppl[a])) <= cap * base]
    if not fluent:
        return 0.0, False
    # ties: the smaller alpha (the gentler intervention)
    return max(fluent, key=lambda a: (float(np.mean(success[a])), -a)), True
