"""Activation cache: one forward captures every site; shards stream back row-aligned; stats exact."""
import json

import numpy as np
import pytest
import torch

from saeflow.data import activations
from saeflow.models.lm import make_config


@pytest.fixture(scope="module")
def model():
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    arch = {"n_layers": 3, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 12}
    return HookedTransformer(make_config(arch, 50)).eval()


SITES = ["blocks.0.hook_resid_post", "blocks.1.ln2.hook_normalized", "blocks.1.hook_mlp_out"]


def test_cache_matches_run_with_cache_and_streams_aligned(model, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50, (10, 12))
    stats = activations.cache_activations(model, tokens, SITES, tmp_path, dtype="float32", shard_tokens=25,
                                          batch_size=4, progress=False)
    _, ref = model.run_with_cache(torch.as_tensor(tokens), names_filter=SITES)
    for s in SITES:
        want = ref[s][:, 1:].reshape(-1, ref[s].shape[-1])  # BOS position excluded
        index = activations.read_index(tmp_path, s)
        assert [sh["n_tokens"] for sh in index] == [25] * 4 + [10]  # bounded shards, remainder last
        got = activations.first_rows(tmp_path, s, 10_000)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(stats[s]["mean"], want.double().mean(0).numpy(), rtol=1e-6, atol=1e-8)
        assert stats[s]["n_tokens"] == 110
    assert json.loads((tmp_path / "stats.json").read_text()).keys() == set(SITES)
    # Streamed (x, y) pairs stay row-aligned across the MLP input and output sites.
    x_all = activations.first_rows(tmp_path, SITES[1], 10_000)
    y_all = activations.first_rows(tmp_path, SITES[2], 10_000)
    gen = activations.batch_stream(tmp_path, SITES[1], SITES[2], batch_size=5, seed=0)
    n = 0
    for x, y in gen():
        for xi, yi in zip(x, y):
            j = int(torch.argmin((x_all - xi).abs().sum(1)))
            torch.testing.assert_close(y_all[j], yi)
            n += 1
    assert n == 110
    # A new epoch reshuffles.
    first = [next(iter(gen()))[0] for _ in range(2)]
    assert not torch.equal(first[0], first[1])


def test_float16_cache_and_errors(model, tmp_path):
    tokens = np.zeros((2, 12), dtype=np.int64)
    activations.cache_activations(model, tokens, SITES[:1], tmp_path, progress=False)
    from safetensors.torch import load_file

    assert load_file(str(tmp_path / SITES[0] / "shard_00000.safetensors"))["x"].dtype == torch.float16
    with pytest.raises(ValueError, match="allowed values"):
        activations.cache_activations(model, tokens, SITES[:1], tmp_path / "b", dtype="int8")
    with pytest.raises(ValueError, match="available"):
        activations.read_index(tmp_path, "blocks.2.hook_resid_post")
    with pytest.raises(ValueError, match="blocks"):
        activations.site_layer("hook_embed")


def test_site_batches_matches_run_with_cache_and_leaves_grad_mode(model):
    tokens = np.random.default_rng(1).integers(0, 50, (5, 12))
    hooks = ["blocks.0.hook_resid_post", "blocks.1.ln2.hook_normalized"]
    _, cache = model.run_with_cache(torch.as_tensor(tokens), names_filter=hooks)
    for skip_bos in (True, False):
        seen = 0
        for i, acts in activations.site_batches(model, tokens, hooks, batch_size=2, skip_bos=skip_bos):
            assert torch.is_grad_enabled()  # the generator's no_grad does not leak into the caller
            for h in hooks:
                want = cache[h][i: i + 2, 1 if skip_bos else 0:]
                assert acts[h].shape == want.shape and not acts[h].requires_grad
                torch.testing.assert_close(acts[h], want, rtol=1e-5, atol=1e-6)
            seen += len(acts[hooks[0]])
        assert seen == len(tokens)


@pytest.mark.parametrize("bad, dtype, words", [(float("nan"), "float32", "non-finite activations"),
                                               (1e6, "float16", "an overflow: use cache.dtype float32")])
def test_non_finite_activations_fail_caching_naming_site_and_shard(model, tmp_path, bad, dtype, words):
    tokens = np.random.default_rng(0).integers(0, 50, (10, 12))

    def poison(act, hook):
        act[3, 5, 0] = bad
        return act

    model.add_hook(SITES[0], poison)
    try:
        with pytest.raises(FloatingPointError, match=rf"cache site {SITES[0]}, shard_00001.safetensors: 1 of 25 .*{words}"):
            activations.cache_activations(model, tokens, SITES, tmp_path, dtype=dtype, shard_tokens=25, batch_size=4,
                                          progress=False)
    finally:
        model.reset_hooks()


def test_a_truncated_shard_fails_naming_the_file(model, tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50, (10, 12))
    activations.cache_activations(model, tokens, SITES[:1], tmp_path, shard_tokens=25, batch_size=4, progress=False)
    shard = tmp_path / SITES[0] / "shard_00001.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match=r"cache shard .*shard_00001.safetensors is unreadable"):
        activations.first_rows(tmp_path, SITES[0], 10_000)
