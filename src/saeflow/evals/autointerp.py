"""Auto-interpretability of latents (metrics.md "Auto-interp"; seed 000's delphi runs, following delphi's
method with saeflow's own code and prompts: eai-delphi does not install with this project's pins).

For each latent a of a seeded sample of live latents, over the scanned windows w (positions after BOS):

1. Examples. m_a(w) = max_p f_a(w, p) and its argmax p*. An activating example is the span of `example_len`
   tokens of w that holds p* three quarters of the way in (saeflow.evals.contexts.peak_span); a non-activating example
   is a seeded span of a window where a never fires (m_a(w) = 0).
   - explain set: the `n_explain` windows with the largest m_a;
   - score set: `n_score` of the other activating windows, spread over the activation distribution (sorted by
     m_a, cut into `n_score` equal strata, one seeded draw per stratum; `quantile` = the stratum's decile), and
     `n_score` seeded non-activating windows.
2. Explanation = explainer(explain set): a text.
3. Detection: the scorer says, given the explanation, whether a fires in each score-set example; items are
   balanced (label 1: activating, label 0: not). Correct = prediction == label.
4. Fuzzing: every activating score-set example twice: with its activating tokens (f_a > 0) marked (label 1), and
   with as many other tokens marked, drawn at random among those where a does not fire (label 0; an example with
   too few such tokens is left out, both versions). The scorer says whether the marks are the tokens the
   explanation describes.
5. Accuracy of a latent = mean correctness over its items; of a dictionary = the mean over latents, with a
   two-level percentile bootstrap: resample latents, then each drawn latent's items (``accuracy_ci``).

Control: the same scorer given another latent's explanation (a seeded derangement), "shuffled": a scorer that
uses the explanation falls towards chance (0.5) under it; one that does not (a biased or broken scorer) does not.

Explainers and scorers are pluggable:
- ``token`` (offline, deterministic, no LLM): the explanation lists the latent's `n_tokens` most frequent peak
  tokens, as JSON strings (``Fires on the tokens " foo", "bar".``); the scorer reads the quoted tokens back
  and predicts "fires" when an example contains one of them, and "correctly marked" when at least half of the
  marked tokens are among them;
- ``hf``: a local Hugging Face causal LM through transformers (pinned repo and revision, or a local copy), on the
  preset's device, batched: the explainer generates greedily from ``EXPLAIN_*`` prompts with the activating
  tokens marked <<like this>>; the scorer reads the next-token logits after ``DETECT_*`` / ``FUZZ_*`` prompts and
  predicts 1 when the log-probability of "Yes" exceeds that of "No" (summed over the tokenizations " Yes",
  "Yes", ...), so every answer is parseable;
- ``random``: a seeded coin flip (chance reference).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np

from saeflow.tensors import to_numpy

MARK_OPEN, MARK_CLOSE = "<<", ">>"

# Prompts of the hf explainer and scorer (written for saeflow after delphi's published method; they enter each
# autointerp node's key through this module's code fingerprint and are recorded in its manifest).
EXPLAIN_SYSTEM = (
    "You study the latent features of a language model. You are shown text excerpts; in each, the tokens on which "
    "one feature is active are marked like <<this>>. Work out what the marked tokens have in common: the tokens "
    "themselves, the context they appear in, or both. Then describe the feature in one short sentence.")
EXPLAIN_USER = "{examples}\n\nDescribe the feature in one sentence, starting with 'Explanation:'."
DETECT_SYSTEM = (
    "You check explanations of language model features. You are given the explanation of a feature and a text "
    "excerpt. Decide whether the feature, as explained, is active on any token of the excerpt. Answer Yes or No.")
DETECT_USER = "Explanation: {explanation}\n\nExcerpt: {text}\n\nIs the feature active in this excerpt? Answer Yes or No."
FUZZ_SYSTEM = (
    "You check explanations of language model features. You are given the explanation of a feature and a text "
    "excerpt in which some tokens are marked like <<this>>. Decide whether the marked tokens are the tokens the "
    "feature, as explained, is active on. Answer Yes or No.")
FUZZ_USER = ("Explanation: {explanation}\n\nExcerpt: {text}\n\nAre the marked tokens the ones this feature is active "
             "on? Answer Yes or No.")
PROMPTS = {"explain": {"system": EXPLAIN_SYSTEM, "user": EXPLAIN_USER},
           "detect": {"system": DETECT_SYSTEM, "user": DETECT_USER},
           "fuzz": {"system": FUZZ_SYSTEM, "user": FUZZ_USER}}
BASELINE_TOKENS = 3  # tokens the baseline explanation lists
YES, NO = ("Yes", " Yes", "yes", " yes", "YES"), ("No", " No", "no", " no", "NO")


@dataclass
class Example:
    """One excerpt of one latent: tokens [start, start + len) of window `window_idx` (positions after BOS)."""

    feature_id: int
    window_idx: int
    start: int
    token_ids: np.ndarray
    token_strs: list[str]
    acts: np.ndarray
    activating: bool
    split: str                 # "explain" or "score"
    quantile: int = -1         # activating score examples: decile of the activation stratum (0: the strongest)
    example_id: int = -1

    @property
    def max_act(self) -> float:
        return float(self.acts.max()) if self.acts.size else 0.0


@dataclass
class Item:
    """A question put to a scorer: an example (with marks, for fuzzing) and its true answer."""

    task: str                  # "detection" or "fuzzing"
    example: Example
    label: int
    marks: np.ndarray | None = None   # bool [n] marked tokens (fuzzing)


# ---------------------------------------------------------------------------------------------------------
# Examples

def choose_windows(peak_max: np.ndarray, n_explain: int, n_score: int, rng) -> dict | None:
    """Windows of one latent for each split, from its per-window peaks m(w) (0: it never fires there), or None
    when there are fewer than n_explain + n_score activating or n_score non-activating windows.

    Returns {"explain": windows by m descending, "score": [(window, decile)], "negative": windows}."""
    m = np.asarray(peak_max, dtype=np.float64)
    pos = np.flatnonzero(m > 0)
    neg = np.flatnonzero(m <= 0)
    if pos.size < n_explain + n_score or neg.size < n_score:
        return None
    order = pos[np.lexsort((pos, -m[pos]))]      # by activation, descending (ties: window index)
    rest = order[n_explain:]
    strata = np.array_split(np.arange(rest.size), n_score)
    score = [(int(rest[s[rng.integers(0, s.size)]]), int(10 * i // n_score)) for i, s in enumerate(strata)]
    negative = rng.choice(neg, n_score, replace=False)
    return {"explain": [int(w) for w in order[:n_explain]], "score": score, "negative": [int(w) for w in negative]}


def peak_table(blocks, positions_per_window: int, latents) -> tuple[np.ndarray, np.ndarray]:
    """(m [W, c], argmax [W, c]) of the given latents per window, from dense codes in window-major blocks."""
    import torch

    lat = torch.as_tensor(np.asarray(latents, dtype=np.int64))
    vals, args = [], []
    for f in blocks:
        f = torch.as_tensor(f)
        n_w = f.shape[0] // positions_per_window
        g = f[:, lat.to(f.device)].reshape(n_w, positions_per_window, -1)
        v, p = g.max(dim=1)
        vals.append(to_numpy(v, torch.float32))
        args.append(to_numpy(p))
    return np.concatenate(vals), np.concatenate(args)


def marks_text(tokens: list[str], marks) -> str:
    """The tokens joined, each run of marked tokens inside <<...>>."""
    out, inside = [], False
    for t, m in zip(tokens, marks):
        if m and not inside:
            out.append(MARK_OPEN)
        elif not m and inside:
            out.append(MARK_CLOSE)
        inside = bool(m)
        out.append(t)
    if inside:
        out.append(MARK_CLOSE)
    return "".join(out)


def build_items(examples: list[Example], rng) -> list[Item]:
    """Detection and fuzzing items of one latent's score-set examples (module docstring, 3 and 4)."""
    items = [Item("detection", e, int(e.activating)) for e in examples]
    for e in examples:
        if not e.activating:
            continue
        on = e.acts > 0
        off = np.flatnonzero(~on)
        if off.size < on.sum():
            continue  # too few tokens where the latent is silent to mark as many wrongly
        wrong = np.zeros_like(on)
        wrong[rng.choice(off, int(on.sum()), replace=False)] = True
        items += [Item("fuzzing", e, 1, on), Item("fuzzing", e, 0, wrong)]
    return items


def derangement(n: int, rng) -> np.ndarray:
    """A seeded permutation with no fixed point (n >= 2): whose explanation each latent gets in the control."""
    if n < 2:
        raise ValueError(f"the shuffled-explanation control needs at least 2 latents, got {n}")
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


# ---------------------------------------------------------------------------------------------------------
# Explainers and scorers

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


class TokenExplainer:
    """The latent's `n_tokens` most frequent peak tokens in its explain set (ties: the stronger example first)."""

    def __init__(self, n_tokens: int = BASELINE_TOKENS):
        self.n_tokens = n_tokens
        self.name = "token"

    def explain(self, per_latent: list[list[Example]]) -> list[str]:
        out = []
        for examples in per_latent:
            counts: dict[str, int] = {}
            for e in sorted(examples, key=lambda e: -e.max_act):
                t = e.token_strs[int(np.argmax(e.acts))]
                counts[t] = counts.get(t, 0) + 1
            top = sorted(counts, key=lambda t: -counts[t])[: self.n_tokens]  # stable: first seen wins ties
            out.append("Fires on the tokens " + ", ".join(json.dumps(t) for t in top) + ".")
        return out


def explanation_tokens(explanation: str) -> set[str]:
    """The JSON-quoted strings of an explanation (the token explainer's tokens)."""
    out = set()
    for q in _QUOTED.findall(explanation):
        try:
            out.add(json.loads(q))
        except json.JSONDecodeError:
            continue
    return out


class TokenScorer:
    """Detection: 1 when the example holds a token the explanation quotes. Fuzzing: 1 when at least half of the
    marked tokens are quoted in the explanation."""

    name = "token"

    def score(self, explanations: list[str], items: list[Item]) -> np.ndarray:
        preds = []
        for text, it in zip(explanations, items):
            toks = explanation_tokens(text)
            if it.task == "detection":
                preds.append(int(any(t in toks for t in it.example.token_strs)))
            else:
                marked = [t for t, m in zip(it.example.token_strs, it.marks) if m]
                preds.append(int(bool(marked) and sum(t in toks for t in marked) >= len(marked) / 2))
        return np.asarray(preds, dtype=np.int64)


class RandomScorer:
    """A seeded fair coin: the chance reference (accuracy 0.5 in expectation on balanced items)."""

    name = "random"

    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)

    def score(self, explanations: list[str], items: list[Item]) -> np.ndarray:
        return self.rng.integers(0, 2, len(items))


class HFLanguageModel:
    """A local Hugging Face causal LM (transformers), loaded once per spec and device: chat-formatted prompts,
    batched greedy generation and Yes/No next-token scoring with left padding.

    spec: {hf_id, revision, local_dir (a save_pretrained copy, used instead of the hub), dtype, batch_size,
    max_new_tokens}."""

    def __init__(self, spec: dict, device: str = "cpu"):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from saeflow.models.hf import _hub_error, _source

        self.spec, self.device = spec, device
        src, kw = _source({**spec, "local_dir": spec.get("local_dir")})
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(src, **kw)
            self.model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, spec.get("dtype", "float32")),
                                                              **kw)
        except OSError as e:
            if spec.get("local_dir") is None:
                raise _hub_error(spec, "explainer/scorer model", e) from e
            raise
        self.model = self.model.to(device).eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.yes_ids = self._first_ids(YES)
        self.no_ids = self._first_ids(NO) - self.yes_ids
        if not self.yes_ids or not self.no_ids:
            raise ValueError(f"{spec['hf_id']}: no distinct first tokens for Yes and No")

    def _first_ids(self, words) -> set[int]:
        ids = set()
        for w in words:
            t = self.tokenizer.encode(w, add_special_tokens=False)
            if t:
                ids.add(int(t[0]))
        return ids

    def prompt(self, system: str, user: str) -> str:
        """The conversation as the model's chat template renders it for the assistant to answer (the system text
        folded into the user turn where the template has no system role), else plain text."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            try:
                return tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": user}],
                                               tokenize=False, add_generation_prompt=True)
            except Exception:  # e.g. Gemma's template raises on a system turn
                return tok.apply_chat_template([{"role": "user", "content": f"{system}\n\n{user}"}],
                                               tokenize=False, add_generation_prompt=True)
        return f"{system}\n\n{user}\n"

    def _batches(self, prompts: list[str]):
        import torch

        bs = int(self.spec.get("batch_size", 8))
        for i in range(0, len(prompts), bs):
            enc = self.tokenizer(prompts[i: i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            with torch.no_grad():
                yield i, enc, pos

    def generate(self, prompts: list[str]) -> list[str]:
        out = []
        for _, enc, _ in self._batches(prompts):
            gen = self.model.generate(**enc, max_new_tokens=int(self.spec.get("max_new_tokens", 64)), do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            out += self.tokenizer.batch_decode(to_numpy(new).tolist(), skip_special_tokens=True)
        return out

    def yes_margin(self, prompts: list[str]) -> np.ndarray:
        """log P(Yes) - log P(No) of the next token after each prompt (each summed over its tokenizations)."""
        import torch

        yes = torch.as_tensor(sorted(self.yes_ids))
        no = torch.as_tensor(sorted(self.no_ids))
        out = []
        for _, enc, pos in self._batches(prompts):
            logits = self.model(**enc, position_ids=pos).logits[:, -1].float()
            lp = torch.log_softmax(logits, -1)
            m = torch.logsumexp(lp[:, yes.to(lp.device)], -1) - torch.logsumexp(lp[:, no.to(lp.device)], -1)
            out.append(to_numpy(m, torch.float64))
        return np.concatenate(out) if out else np.zeros(0)


def parse_explanation(text: str) -> str:
    """The generated explanation: what follows the last 'Explanation:', its first non-empty line."""
    body = text.rsplit("Explanation:", 1)[-1]
    line = next((s.strip() for s in body.splitlines() if s.strip()), "")
    return line[:400] or "(no explanation)"


class HFExplainer:
    name_prefix = "hf:"

    def __init__(self, lm: HFLanguageModel):
        self.lm = lm
        self.name = f"hf:{lm.spec['hf_id']}"

    def prompts(self, per_latent: list[list[Example]]) -> list[str]:
        out = []
        for examples in per_latent:
            body = "\n".join(f"Excerpt {i + 1}: {marks_text(e.token_strs, e.acts > 0)}" for i, e in enumerate(examples))
            out.append(self.lm.prompt(EXPLAIN_SYSTEM, EXPLAIN_USER.format(examples=body)))
        return out

    def explain(self, per_latent: list[list[Example]]) -> list[str]:
        return [parse_explanation(t) for t in self.lm.generate(self.prompts(per_latent))]


class HFScorer:
    def __init__(self, lm: HFLanguageModel):
        self.lm = lm
        self.name = f"hf:{lm.spec['hf_id']}"

    def prompts(self, explanations: list[str], items: list[Item]) -> list[str]:
        out = []
        for text, it in zip(explanations, items):
            if it.task == "detection":
                user = DETECT_USER.format(explanation=text, text="".join(it.example.token_strs))
                out.append(self.lm.prompt(DETECT_SYSTEM, user))
            else:
                user = FUZZ_USER.format(explanation=text, text=marks_text(it.example.token_strs, it.marks))
                out.append(self.lm.prompt(FUZZ_SYSTEM, user))
        return out

    def score(self, explanations: list[str], items: list[Item]) -> np.ndarray:
        return (self.lm.yes_margin(self.prompts(explanations, items)) > 0).astype(np.int64)


def method_name(explainer, scorer) -> str:
    """How a method is named in the tables: "token", "hf:<repo>" when one kind explains and scores, else
    "<explainer> explains, <scorer> scores"."""
    return explainer.name if explainer.name == scorer.name else f"{explainer.name} explains, {scorer.name} scores"


def make_method(explainer: dict, scorer: dict, device: str, seed: int, models: dict | None = None):
    """(explainer, scorer) objects of config specs ({kind: token | hf | random, ...}); hf models are loaded once
    per (hf_id, revision) and shared through ``models``."""
    models = {} if models is None else models

    def lm(spec):
        ref = (spec["hf_id"], spec["revision"])
        if ref not in models:
            models[ref] = HFLanguageModel(spec, device)
        return models[ref]

    if explainer["kind"] == "token":
        ex = TokenExplainer(explainer.get("n_tokens", BASELINE_TOKENS))
    elif explainer["kind"] == "hf":
        ex = HFExplainer(lm(explainer))
    else:
        raise ValueError(f"explainer kind {explainer['kind']!r}; allowed values: token, hf")
    if scorer["kind"] == "token":
        sc = TokenScorer()
    elif scorer["kind"] == "random":
        sc = RandomScorer(seed)
    elif scorer["kind"] == "hf":
        sc = HFScorer(lm(scorer))
    else:
        raise ValueError(f"scorer kind {scorer['kind']!r}; allowed values: token, hf, random")
    return ex, sc


# ---------------------------------------------------------------------------------------------------------
# Scores

def score_latents(explanations: dict[int, str], items: dict[int, list[Item]], scorer, explanation_of: dict[int, int]):
    """Predictions and correctness of every item, each latent's items scored with the explanation of
    ``explanation_of[latent]`` (itself, or another latent in the shuffled control). Returns rows (feature_id,
    explained_by, task, example_id, label, prediction, correct)."""
    flat, texts, owners = [], [], []
    for a, its in items.items():
        for it in its:
            flat.append(it)
            texts.append(explanations[explanation_of[a]])
            owners.append(a)
    preds = scorer.score(texts, flat) if flat else np.zeros(0, np.int64)
    return [{"feature_id": a, "explained_by": explanation_of[a], "task": it.task, "example_id": it.example.example_id,
             "label": it.label, "prediction": int(p), "correct": int(p == it.label),
             # the marked tokens (fuzzing); none for detection, as an empty list: one column type in every table
             "marks": np.flatnonzero(it.marks if it.marks is not None else []).astype(np.int32)}
            for a, it, p in zip(owners, flat, preds)]


def accuracy_ci(correct_by_latent: list, n_resamples: int = 1000, confidence: float = 0.95,
                seed: int = 0) -> tuple[float, float, float]:
    """(mean over latents of each latent's mean correctness, lo, hi): a two-level percentile bootstrap, each
    resample drawing latents with replacement and, for every drawn latent, its items with replacement."""
    return _two_level([np.asarray(c, dtype=np.float64) for c in correct_by_latent], n_resamples, confidence, seed)


def accuracy_gap_ci(own_by_latent: list, control_by_latent: list, n_resamples: int = 1000, confidence: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """(mean over latents of acc_own - acc_control, lo, hi) for two scorings of the same items of each latent (its
    own explanation and the shuffled control): the two-level bootstrap of ``accuracy_ci`` with each latent's items
    resampled once for both, so the difference is paired."""
    diffs = []
    for a, b in zip(own_by_latent, control_by_latent):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != b.shape:
            raise ValueError(f"paired scorings need the same items, got {a.shape} and {b.shape}")
        diffs.append(a - b)
    return _two_level(diffs, n_resamples, confidence, seed)


def _two_level(groups: list[np.ndarray], n_resamples: int, confidence: float, seed: int) -> tuple[float, float, float]:
    """Mean over groups of each group's mean, with the percentile CI of resampling groups, then each drawn group's
    values (numpy ``default_rng(seed)``: every group's B resampled means first, then the group draws)."""
    if not groups or any(g.ndim != 1 or g.size == 0 for g in groups):
        raise ValueError("the bootstrap needs at least one latent, each with at least one item")
    rng = np.random.default_rng(seed)
    B = int(n_resamples)
    means = np.stack([g[rng.integers(0, g.size, (B, g.size))].mean(1) for g in groups])   # [n, B]
    draw = rng.integers(0, len(groups), (B, len(groups)))
    boot = means[draw, np.arange(B)[:, None]].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(np.mean([g.mean() for g in groups])), float(lo), float(hi)


# ---------------------------------------------------------------------------------------------------------
# The node's computation

def collect_examples(codes, positions_per_window: int, candidates, tokens: np.ndarray, tokenizer, n_latents: int,
                     n_explain: int, n_score: int, example_len: int, seed: int = 0):
    """Examples of the first `n_latents` candidates (in the order given) that have enough activating and
    non-activating windows (``choose_windows``). ``codes()`` returns a fresh iterator of dense code blocks
    (window-major, whole windows; it is read twice); ``tokens`` [W, T] are the scanned windows with BOS first.

    Returns ({latent: [Example]}, {"n_candidates", "n_skipped"})."""
    from saeflow.evals import contexts

    P = positions_per_window
    candidates = [int(a) for a in candidates]
    m, arg = peak_table(codes(), P, candidates)
    rng = np.random.default_rng([seed, 1])
    chosen, skipped = {}, 0
    for j, a in enumerate(candidates):
        sel = choose_windows(m[:, j], n_explain, n_score, rng)
        if sel is None:
            skipped += 1
            continue
        chosen[a] = (j, sel)
        if len(chosen) == n_latents:
            break
    spec = []   # (latent, window, split, activating, quantile, centre)
    for a, (j, sel) in chosen.items():
        spec += [(a, w, "explain", True, -1, int(arg[w, j])) for w in sel["explain"]]
        spec += [(a, w, "score", True, q, int(arg[w, j])) for w, q in sel["score"]]
        spec += [(a, w, "score", False, -1, int(rng.integers(0, P))) for w in sel["negative"]]
    if not spec:
        return {}, {"n_candidates": len(candidates), "n_skipped": skipped}
    acts = contexts.window_activations(codes(), P, [s[1] for s in spec], [s[0] for s in spec])
    spans = [contexts.peak_span(c, P, example_len) for *_, c in spec]
    ids = [tokens[w, 1:][b:e] for (_, w, *_), (b, e) in zip(spec, spans)]
    strs = contexts.token_strings(tokenizer, ids)
    out: dict[int, list[Example]] = {a: [] for a in chosen}
    for i, ((a, w, split, on, q, _), (b, e)) in enumerate(zip(spec, spans)):
        out[a].append(Example(a, w, b, np.asarray(ids[i], dtype=np.int64), strs[i], acts[i, b:e].astype(np.float32),
                              on, split, q, example_id=len(out[a])))
    return out, {"n_candidates": len(candidates), "n_skipped": skipped}


def evaluate(examples: dict[int, list[Example]], methods: list[tuple], seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Explain and score every latent with every method (name, explainer, scorer), with its own explanation
    (control "none") and another latent's (control "shuffled", a seeded derangement). The items, fuzzing's wrong
    marks included, are the same for every method.

    Returns (explanation rows: method, feature_id, explanation; item rows: method, control, feature_id,
    explained_by, task, example_id, label, prediction, correct, marks)."""
    latents = sorted(examples)
    rng = np.random.default_rng([seed, 2])
    items = {a: build_items([e for e in examples[a] if e.split == "score"], rng) for a in latents}
    shuffled = dict(zip(latents, (latents[i] for i in derangement(len(latents), rng))))
    expl_rows, item_rows = [], []
    for name, explainer, scorer in methods:
        texts = explainer.explain([[e for e in examples[a] if e.split == "explain"] for a in latents])
        expl = dict(zip(latents, texts))
        expl_rows += [{"method": name, "feature_id": a, "explanation": expl[a]} for a in latents]
        for control, owner in (("none", {a: a for a in latents}), ("shuffled", shuffled)):
            item_rows += [{"method": name, "control": control, **r} for r in score_latents(expl, items, scorer, owner)]
    return expl_rows, item_rows


def summarise(item_rows: list[dict], groups: dict[str, list[int]], n_resamples: int = 1000, confidence: float = 0.95,
              seed: int = 0) -> list[dict]:
    """Accuracy with its two-level bootstrap CI (``accuracy_ci``) per method, control, task and group of latents
    (``groups``: name -> latents, e.g. {"all": every latent}): rows (method, control, task, group, accuracy, lo,
    hi, n_latents, n_items). For each method, task and group also the row of control "gap": own explanations minus
    shuffled ones on the same items (``accuracy_gap_ci``), the result measured against its control."""
    by: dict[tuple, dict[int, list[int]]] = {}
    for r in item_rows:
        by.setdefault((r["method"], r["control"], r["task"]), {}).setdefault(r["feature_id"], []).append(r["correct"])
    out = []
    for (method, control, task), per in by.items():
        for group, lat in groups.items():
            c = [np.asarray(per[a]) for a in lat if a in per]
            if not c:
                continue
            row = {"method": method, "task": task, "group": group, "n_latents": len(c),
                   "n_items": int(sum(x.size for x in c))}
            acc, lo, hi = accuracy_ci(c, n_resamples, confidence, seed)
            out.append({**row, "control": control, "accuracy": acc, "lo": lo, "hi": hi})
            shuffled = by.get((method, "shuffled", task), {})
            if control == "none" and all(a in shuffled for a in lat if a in per):
                d = [np.asarray(shuffled[a]) for a in lat if a in per]
                gap, glo, ghi = accuracy_gap_ci(c, d, n_resamples, confidence, seed)
                out.append({**row, "control": "gap", "accuracy": gap, "lo": glo, "hi": ghi})
    return out
