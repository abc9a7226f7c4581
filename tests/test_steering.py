"""saeflow.evals.steering against closed forms and slow references: the hook adds exactly alpha * v, alpha = 0
is the clean model bit for bit, controls are reproducible from their seed, seeded sampling is paired across
directions, generation and perplexity equal one-at-a-time references, the text validators, candidate
ranking and the choice of alpha."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformer_lens import HookedTransformer

from saeflow.evals import probe, steering
from saeflow.models.lm import make_config

HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    arch = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 32}
    return HookedTransformer(make_config(arch, 40)).eval()


@pytest.fixture(scope="module")
def prompts():
    g = np.random.default_rng(0)
    p = g.integers(1, 40, size=(6, 5))
    p[:, 0] = 0
    return p


def test_hook_adds_exactly_alpha_v(model, prompts):
    v = steering.random_vector(16, seed=3, device="cpu")
    toks = torch.as_tensor(prompts)
    _, clean = model.run_with_cache(toks, names_filter=[HOOK])
    seen = {}
    with steering.steered(model, HOOK, v, 2.5):
        model.run_with_hooks(toks, fwd_hooks=[(HOOK, lambda a, hook: seen.setdefault("a", a.clone()))])
    assert torch.allclose(seen["a"] - clean[HOOK], (2.5 * v).expand_as(clean[HOOK]), atol=1e-6)
    seen.clear()
    with steering.steered(model, HOOK, v, 2.5, from_pos=3):
        model.run_with_hooks(toks, fwd_hooks=[(HOOK, lambda a, hook: seen.setdefault("a", a.clone()))])
    diff = seen["a"] - clean[HOOK]
    assert torch.equal(diff[:, :3], torch.zeros_like(diff[:, :3]))
    assert torch.allclose(diff[:, 3:], (2.5 * v).expand_as(diff[:, 3:]), atol=1e-6)


def test_steering_the_last_residual_shifts_logits_by_the_unembedding_in_closed_form():
    # One layer, no final LayerNorm: logits = resid_post @ W_U + b_U, so adding s v shifts them by s v @ W_U.
    torch.manual_seed(1)
    arch = {"n_layers": 1, "d_model": 8, "n_heads": 2, "d_mlp": 16, "act_fn": "gelu", "n_ctx": 8}
    cfg = make_config(arch, 20)
    cfg.normalization_type = None
    m = HookedTransformer(cfg).eval()
    toks = torch.randint(0, 20, (3, 6))
    v = steering.random_vector(8, seed=0, device="cpu")
    with torch.no_grad():
        clean = m(toks)
        with steering.steered(m, "blocks.0.hook_resid_post", v, 1.7):
            steered = m(toks)
    assert torch.allclose(steered - clean, (1.7 * v @ m.W_U).expand_as(clean), atol=1e-5)


def test_alpha_zero_is_the_clean_model_bit_for_bit(model, prompts):
    v = steering.random_vector(16, seed=1, device="cpu")
    toks = torch.as_tensor(prompts)
    with torch.no_grad():
        clean = model(toks)
        with steering.steered(model, HOOK, v, 0.0):
            zero = model(toks)
    assert torch.equal(clean, zero)
    for greedy in (True, False):
        a = steering.generate(model, prompts, 5, greedy=greedy, seed=7)
        b = steering.generate(model, prompts, 5, greedy=greedy, seed=7, steer=(HOOK, v, 0.0, 0))
        assert np.array_equal(a, b)


def test_controls_reproducible_from_their_seed():
    a, b = steering.random_vector(32, 5, "cpu"), steering.random_vector(32, 5, "cpu")
    assert torch.equal(a, b) and abs(float(a.norm()) - 1) < 1e-6
    assert not torch.equal(a, steering.random_vector(32, 6, "cpu"))
    stats = _stats(np.array([[1.0, 0, 2, 0, 3], [0, 0, 1, 0, 1]]))
    picks = {steering.random_latent(stats, exclude=[0], seed=s) for s in range(20)}
    assert picks <= {2, 4} and len(picks) == 2  # fires somewhere, not a candidate, not a dead latent
    assert steering.random_latent(stats, [0], 3) == steering.random_latent(stats, [0], 3)


def test_generation_equals_one_at_a_time_reference(model, prompts):
    """Greedy, batched, steered: each row equals a plain loop over one prompt with argmax."""
    v = steering.random_vector(16, seed=2, device="cpu")
    batched = steering.generate(model, prompts, 4, greedy=True, batch_size=4, steer=(HOOK, v, 3.0, 0))
    for i, p in enumerate(prompts):
        t = torch.as_tensor(p[None])
        with torch.no_grad():
            for j in range(4):
                last = model.run_with_hooks(t, fwd_hooks=[(HOOK, lambda a, hook: a + 3.0 * v)])[0, -1]
                ref = int(last.argmax())
                if batched[i, j] != ref:
                    # Batched and single-row kernels may round differently: only a near-tie may flip.
                    top2 = last.topk(2).values
                    assert float(top2[0] - top2[1]) < 1e-4 * float(top2.abs().max()), (i, j)
                    break
                t = torch.cat([t, torch.tensor([[ref]])], 1)


def test_sampling_is_seeded_and_paired(model, prompts):
    a = steering.generate(model, prompts, 6, seed=11)
    assert np.array_equal(a, steering.generate(model, prompts, 6, seed=11))
    assert not np.array_equal(a, steering.generate(model, prompts, 6, seed=12))
    with pytest.raises(ValueError, match="n_ctx"):
        steering.generate(model, prompts, 40)


def test_continuation_nll_equals_a_slow_reference(model, prompts):
    conts = steering.generate(model, prompts, 4, seed=0)
    nll = steering.continuation_nll(model, prompts, conts, batch_size=4)
    for i in range(len(prompts)):
        seq = torch.as_tensor(np.concatenate([prompts[i], conts[i]])[None])
        with torch.no_grad():
            logp = torch.log_softmax(model(seq)[0], -1)
        ref = -np.mean([float(logp[prompts.shape[1] - 1 + j, conts[i, j]]) for j in range(4)])
        assert abs(nll[i] - ref) < 1e-5


def test_last_token_margin(model, prompts):
    m = steering.last_token_margin(model, prompts, [1, 2, 3], [4, 5])
    with torch.no_grad():
        last = model(torch.as_tensor(prompts))[:, -1]
    ref = last[:, [1, 2, 3]].max(-1).values - last[:, [4, 5]].max(-1).values
    assert np.allclose(m, ref.numpy(), atol=1e-6)


@pytest.mark.parametrize("text,valid", [("no code here", None), ("```python\nx = 1\n```", True),
                                        ("a\n```\ndef f(:\n```", False), ("```py\nx=1\n```\n```\ny = (\n```", False)])
def test_python_valid(text, valid):
    assert steering.python_valid(text) is valid


@pytest.mark.parametrize("text,ok", [("plain", None), ("$$x^2$$", True), ("$x$ and $$y", False), ("\\(a\\)", True),
                                     ("\\[a", False), ("\\begin{align}x\\end{align}", True),
                                     ("\\begin{a}\\begin{b}\\end{a}\\end{b}", False)])
def test_latex_balanced(text, ok):
    assert steering.latex_balanced(text) is ok


def test_latex_first():
    assert steering.latex_first("  $$x$$") and steering.latex_first("\\[x\\]") and not steering.latex_first("x $y$")


def _stats(code_sum, n_pos=10, n_neg=10):
    fire = (np.asarray(code_sum) > 0).astype(float)
    return steering.ContrastStats(np.asarray(code_sum, float), fire, np.ones((2, 3)), 40.0, np.array([n_pos, n_neg], float))


def test_candidates_ranked_by_class_mean_difference():
    stats = _stats([[5.0, 1, 3, 0], [1.0, 1, 0, 0]])  # diffs (per token): 0.4, 0, 0.3, dead
    df = steering.rank_candidates(stats, 3)
    assert df["latent"].tolist() == [0, 2, 1]
    assert np.allclose(df["diff"], [0.4, 0.3, 0.0]) and np.allclose(df["mean_pos"], [0.5, 0.3, 0.1])
    assert stats.rms_norm == pytest.approx(np.sqrt(40 / 20))


def test_contrast_stats_equal_direct_sums(model, prompts):
    W = torch.randn(16, 24, generator=torch.Generator().manual_seed(0))
    encode = lambda x: torch.relu(x @ W)  # noqa: E731
    pos = np.array([True, False, True, True, False, False])
    s = steering.contrast_stats(model, prompts, pos, HOOK, encode, batch_size=4)
    _, cache = model.run_with_cache(torch.as_tensor(prompts), names_filter=[HOOK])
    x = cache[HOOK][:, 1:].double()
    f = torch.relu(x.float() @ W).double()
    assert np.allclose(s.code_sum[0], f[pos].sum((0, 1)).numpy(), rtol=1e-5)
    assert np.allclose(s.act_sum[1], x[~pos].sum((0, 1)).numpy(), rtol=1e-6)
    assert s.n_tokens.tolist() == [3 * 4, 3 * 4]
    assert s.rms_norm == pytest.approx(float(x.pow(2).sum(-1).mean().sqrt()), rel=1e-6)
    dom = s.diff_of_means()
    assert np.allclose(dom, (x[pos].mean((0, 1)) - x[~pos].mean((0, 1))).numpy(), atol=1e-9)


def test_best_alpha_respects_the_fluency_cap():
    succ = {0.0: [0.2], 0.5: [0.4], 1.0: [0.9], -1.0: [1.0]}
    ppl = {0.0: [10.0], 0.5: [12.0], 1.0: [40.0], -1.0: [10.0]}
    assert steering.best_alpha(succ, ppl, cap=1.5) == (0.5, True)    # 1.0 breaks the cap; negatives steer away
    assert steering.best_alpha(succ, ppl, cap=5.0) == (1.0, True)
    assert steering.best_alpha(succ, {**ppl, 0.5: [100.0]}, cap=1.5) == (0.0, False)


def test_paired_effect_ci_covers_the_planted_difference():
    """The steering effect is probe.paired_bootstrap_diff of success after vs before, over paired units."""
    rng = np.random.default_rng(0)
    before = rng.random(400) < 0.3
    after = before | (rng.random(400) < 0.3)  # success rises by about 0.21
    e, lo, hi = probe.paired_bootstrap_diff(after, before, n_resamples=500, seed=0)
    assert lo > 0.1 and hi < 0.35 and lo <= e <= hi
    e0, lo0, hi0 = probe.paired_bootstrap_diff(before, before, n_resamples=200, seed=0)
    assert e0 == lo0 == hi0 == 0


def test_chat_wrap_renders_the_template_around_the_kept_prompt_tokens(tmp_path):
    """On the tiny Qwen3 stand-in (ChatML template): [BOS] + template prefix + the prompt's own tokens + the
    generation prompt, identical to tokenising the rendered chat; a tokenizer without a template is refused
    naming steer.chat_template."""
    from saeflow.models import hf, random_models

    spec = random_models.random_model("qwen3", tmp_path / "qwen3", "tiny", seed=0)
    tok = hf.load_tokenizer(spec)
    body = [tok.encode(t, add_special_tokens=False) for t in ("alpha beta gamma", "delta epsilon zeta")]
    n = min(map(len, body))
    bos = hf.bos_id(spec, tok)
    prompts = np.array([[bos, *b[:n]] for b in body])
    wrapped = steering.chat_wrap(tok, prompts)
    for row, b in zip(wrapped, body):
        text = tok.decode(b[:n])
        rendered = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                           add_generation_prompt=True)
        assert rendered.startswith("<|im_start|>user\n") and rendered.endswith("<|im_end|>\n<|im_start|>assistant\n")
        assert row[0] == bos and tok.decode(row[1:]) == rendered
        k = len(tok.encode("<|im_start|>user\n", add_special_tokens=False))
        assert row[1 + k: 1 + k + n].tolist() == b[:n]  # the prompt's tokens are kept, not re-tokenised
    suffix = tok.encode("<|im_end|>\n<|im_start|>assistant\n", add_special_tokens=False)
    assert wrapped.shape == (2, prompts.shape[1] + k + len(suffix)) and wrapped[0, -len(suffix):].tolist() == suffix
    assert np.array_equal(wrapped[0, : 1 + k], wrapped[1, : 1 + k])
    plain = random_models.random_model("qwen2", tmp_path / "qwen2", "tiny", seed=0)
    with pytest.raises(ValueError, match=r"^steer.chat_template: .*no chat template"):
        steering.chat_wrap(hf.load_tokenizer(plain), prompts)
