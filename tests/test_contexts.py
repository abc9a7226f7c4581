"""Top contexts as a reader sees them (saeflow.evals.contexts): firing statistics and histograms against a
slow reference, window activations against direct indexing, context activations against one forward per
context, and the decoded text against the tokenizer."""
import numpy as np
import pandas as pd
import pytest
import torch

from saeflow.data import tokenizer as T
from saeflow.evals import contexts
from saeflow.evals.influence import DictSpec
from saeflow.models.lm import make_config


def codes(n_w=9, P=5, d=6, seed=0):
    g = np.random.default_rng(seed)
    f = np.maximum(g.normal(size=(n_w * P, d)), 0).astype(np.float32)
    f[:, 5] = 0          # a dead latent
    f[3, 4] = 7.0        # one large activation, on its bin's upper edge
    return f


def test_latent_scan_matches_a_slow_reference_across_blocks():
    P, nb = 5, 4
    f = codes(P=P)
    scan = contexts.LatentScan(nb)
    blocks = [torch.as_tensor(f[i: i + 2 * P]) for i in range(0, len(f), 2 * P)]
    for b in blocks:
        scan.add(b)
    for b in blocks:
        scan.add_histogram(b)
    t = scan.table()
    assert scan.n_tokens == len(f)
    for a in range(f.shape[1]):
        col = f[:, a]
        on = col[col > 0]
        r = t.iloc[a]
        assert r["n_fired"] == on.size and r["density"] == pytest.approx(on.size / len(f))
        assert r["max_activation"] == pytest.approx(col.max())
        if on.size:
            assert r["mean_activation"] == pytest.approx(on.mean(), rel=1e-6)
            # bins (b/nb * max, (b+1)/nb * max]: the slow way, value by value
            want = np.zeros(nb, int)
            for v in on:
                want[min(nb, max(1, int(np.ceil(v / col.max() * nb)))) - 1] += 1
            assert r["hist"].tolist() == want.tolist() and r["hist"].sum() == on.size
        else:
            assert np.isnan(r["mean_activation"]) and r["hist"].sum() == 0
    assert t.iloc[4]["hist"][-1] >= 1  # the maximum itself is in the last bin
    with pytest.raises(RuntimeError, match="first pass"):
        contexts.LatentScan(nb).add_histogram(blocks[0])


def test_window_activations_equal_direct_indexing_and_refuse_unscanned_windows():
    P = 5
    f = codes(P=P)
    blocks = [f[i: i + 3 * P] for i in range(0, len(f), 3 * P)]
    w, a = np.array([8, 0, 4, 4]), np.array([1, 2, 0, 3])
    seen = []
    got = contexts.window_activations(blocks, P, w, a, on_block=lambda b: seen.append(b.shape[0]))
    want = f.reshape(9, P, -1)[w, :, a]
    np.testing.assert_array_equal(got, want)
    assert sum(seen) == len(f)
    with pytest.raises(ValueError, match="beyond"):
        contexts.window_activations(blocks, P, [9], [0])


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    texts = ["def main(args):\n    return args.value + 1\n", "the quick brown fox jumps over the lazy dog\n"] * 50
    T.train_bpe(texts, vocab_size=320, out_dir=d)
    return T.load_tokenizer(d)


def test_with_text_decodes_each_token_and_the_whole_context(tok):
    text = "the quick brown fox jumps"
    ids = np.array([tok.encode(text, add_special_tokens=False)] * 2)
    acts = np.linspace(0, 1, ids.size, dtype=np.float32).reshape(ids.shape)
    ev = pd.DataFrame({"feature_id": [3, 4], "activation": [1.0, 0.5]})
    out = contexts.with_text(ev, ids, acts, tok, [ids.shape[1] - 1, 0])
    assert out["context"].tolist() == [text, text]
    assert "".join(out["token_strs"][0]) == text   # ASCII byte-level BPE: the pieces spell the text
    assert out["peak_token_text"].tolist() == [out["token_strs"][0][-1], out["token_strs"][1][0]]
    np.testing.assert_array_equal(out["acts"][1], acts[1])
    assert out["tokens"][0].dtype == np.int32 and list(out["peak_index"]) == [ids.shape[1] - 1, 0]
    with pytest.raises(ValueError, match="must agree"):
        contexts.with_text(ev, ids[:1], acts[:1], tok, 0)


def test_context_activations_equal_one_forward_per_context():
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer

    torch.manual_seed(0)
    arch = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 16}
    model = HookedTransformer(make_config(arch, 40)).eval()
    sae = TopKSAE(TopKSAEConfig(d_in=16, d_sae=24, k=5))
    with torch.no_grad():
        for p in sae.parameters():
            p.normal_(0, 0.3)
    spec = DictSpec(sae, "blocks.1.hook_resid_post")
    ctx = np.random.default_rng(0).integers(3, 40, (7, 6))
    ctx[:, 0] = 0
    lat = np.array([1, 5, 5, 0, 23, 7, 2])
    got = contexts.context_activations(model, ctx, spec, lat, batch_size=3)
    for i in range(len(ctx)):
        _, cache = model.run_with_cache(torch.as_tensor(ctx[i:i + 1]), names_filter=[spec.hook_in])
        with torch.no_grad():
            f = spec.codes(cache[spec.hook_in][0, 1:])
        np.testing.assert_allclose(got[i], f[:, lat[i]].numpy(), rtol=1e-5, atol=1e-6)
    assert got.shape == (7, 5)


def test_a_byte_piece_is_shown_by_its_vocabulary_entry(tok):
    ids = tok.encode("é€", add_special_tokens=False)        # multi-byte characters: pieces that decode to U+FFFD
    strs = contexts.token_strings(tok, [ids])[0]
    assert "\ufffd" not in "".join(strs) and len(strs) == len(ids)
    whole = [t for t in contexts.token_strings(tok, [tok.encode("the cat", add_special_tokens=False)])[0]]
    assert "".join(whole) == "the cat"
