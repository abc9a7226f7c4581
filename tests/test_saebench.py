"""SAEBench's sparse-probing protocol (saeflow.evals.saebench): balanced class samples and one-vs-rest tasks of the
sizes SAEBench draws, planted classes found by the top-1 dim while noise stays at chance, the means SAEBench reports,
text beginnings tokenized as SAEBench does, and the masked mean over a right-padded batch equal to each text run
alone (padding after a text changes nothing before it in a causal model)."""
import numpy as np
import pandas as pd
import pytest
import torch

from saeflow.evals import saebench


def test_class_samples_balanced_by_group_and_sized():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2, 3], 100)
    groups = np.tile([0, 1], 200)
    groups[300:400] = 0                           # class 3 has one group only
    out = saebench.class_samples(labels, [0, 1, 2, 3, 9], 40, rng, groups)
    assert sorted(out) == [0, 1, 2]               # 3: one group; 9: absent (SAEBench drops such classes)
    for c, idx in out.items():
        assert len(idx) == 40 and (labels[idx] == c).all() and (groups[idx] == 0).sum() == 20
    plain = saebench.class_samples(labels, [0, 1], 100, rng)
    assert sorted(plain) == [0, 1] and len(set(plain[0])) == 100
    assert saebench.class_samples(labels, [0], 101, rng) == {}


def test_one_vs_rest_is_balanced_with_negatives_from_every_class():
    feats = {c: np.full((30, 2), float(c)) for c in range(4)}
    X, y = saebench.one_vs_rest(feats, 2, np.random.default_rng(1))
    assert len(y) == 60 and y.sum() == 30 and (X[y == 1] == 2).all()
    neg = X[y == 0, 0]
    assert set(neg) == {0.0, 1.0, 3.0} and all(abs((neg == c).sum() - 10) <= 1 for c in (0, 1, 3))
    with pytest.raises(ValueError, match="two classes"):
        saebench.one_vs_rest({0: feats[0]}, 0, np.random.default_rng(0))


def planted(n, d, rng):
    """SAE features: class c lights dim c; raw features: noise."""
    sae = {c: rng.random((n, d)) * 0.1 for c in range(5)}
    for c, x in sae.items():
        x[:, c] += 1.0
    raw = {c: rng.normal(size=(n, d)) for c in range(5)}
    return {"sae": sae, "raw": raw}


def test_planted_classes_found_by_the_top_latent_noise_at_chance():
    rng = np.random.default_rng(0)
    rows = saebench.evaluate(planted(60, 12, rng), planted(40, 12, rng), ks=(1, 2), seed=3)
    assert set(rows["class"]) == set(range(5)) and set(rows["k"]) == {"1", "2", "all"}
    assert (rows["n_train"] == 120).all() and (rows["n_test"] == 80).all()
    m = saebench.saebench_metrics(rows)
    assert m["sae_top_1_test_accuracy"] == pytest.approx(1.0) and m["sae_test_accuracy"] == pytest.approx(1.0)
    assert abs(m["llm_top_1_test_accuracy"] - 0.5) < 0.12 and set(m) == {
        "sae_top_1_test_accuracy", "sae_top_2_test_accuracy", "sae_test_accuracy", "llm_top_1_test_accuracy",
        "llm_top_2_test_accuracy", "llm_test_accuracy"}


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from saeflow.data import tokenizer as T

    d = tmp_path_factory.mktemp("tok")
    T.train_bpe(["the quick brown fox jumps over the lazy dog\n"] * 50, vocab_size=300, out_dir=d)
    return T.load_tokenizer(d)


def test_text_beginnings_tokenized_as_saebench(tok):
    bos = tok.bos_token_id
    text = "the quick brown fox jumps over the lazy dog"
    ids, keep = saebench.tokenize_beginnings(tok, [text, "the", ""], 6, bos)
    body = tok.encode(text, add_special_tokens=False)
    assert len(body) > 5                                   # truncated: BOS and the first 5 tokens
    assert ids[0, 0] == bos and list(ids[0, 1:]) == body[:5] and keep[0].tolist() == [False] + [True] * 5
    n = len(tok.encode("the", add_special_tokens=False))
    assert keep[1].sum() == n and not keep[1, 1 + n:].any() and not keep[2].any()


def test_masked_mean_of_a_padded_batch_equals_each_text_alone():
    from transformer_lens import HookedTransformer

    from saeflow.models.lm import make_config

    torch.manual_seed(0)
    arch = {"n_layers": 2, "d_model": 16, "n_heads": 2, "d_mlp": 32, "act_fn": "gelu", "n_ctx": 12}
    model = HookedTransformer(make_config(arch, 40)).eval()
    hook = "blocks.1.hook_resid_post"
    W = torch.randn(16, 24)
    rng = np.random.default_rng(0)
    lengths = [12, 7, 3]
    ids = np.zeros((3, 12), np.int64)
    keep = np.zeros((3, 12), bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = np.concatenate([[0], rng.integers(3, 40, n - 1)])
        keep[i, 1:n] = True                    # BOS and padding left out
    raw, codes = saebench.masked_mean(model, ids, keep, [hook], {"d": (hook, lambda x: torch.relu(x @ W))}, batch_size=2)
    for i, n in enumerate(lengths):
        _, cache = model.run_with_cache(torch.as_tensor(ids[i:i + 1, :n]), names_filter=[hook])
        a = cache[hook][0, 1:n].double()
        np.testing.assert_allclose(raw[hook][i], a.mean(0).numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(codes["d"][i], torch.relu(a.float() @ W).double().mean(0).numpy(), rtol=1e-4,
                                   atol=1e-6)


def test_saebench_figure_draws_each_site_baseline_once(tmp_path, monkeypatch):
    """One panel per (task, layer); dictionaries of one site share one raw curve, of different sites get one each."""
    from saeflow.report import eval_figures

    rows = []
    for layer, raw_of in ((0, {"a": 0.6, "b": 0.6}), (2, {"a": 0.6, "b": 0.7})):
        for d, raw in raw_of.items():
            for i, k in enumerate(["1", "2", "5", "all"]):
                rows.append({"task": "t", "layer": layer, "dictionary": d, "k": k, "acc_sae": 0.7 + 0.05 * i,
                             "acc_raw": raw + 0.02 * i, "n_test": 200})
    legends = []
    real_save = eval_figures.save

    def spy(fig, path):
        legends.extend([t.get_text() for t in ax.get_legend().get_texts()] for ax in fig.axes if ax.get_visible())
        real_save(fig, path)

    monkeypatch.setattr(eval_figures, "save", spy)
    path = tmp_path / "saebench.png"
    eval_figures.saebench_figure(pd.DataFrame(rows), path, "SAEBench")
    assert path.stat().st_size > 10_000
    assert legends == [["a", "b", "raw"], ["a", "b", "raw (a)", "raw (b)"]]
