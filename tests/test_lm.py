"""Embedded LM: trains (loss falls), saves and reloads bit-identically with its tokenizer."""
import torch

from saeflow.data import corpus, tokenizer, windows
from saeflow.models import lm


def test_train_save_load_roundtrip(tmp_path):
    docs, _ = corpus.synthetic_documents(60, 60, seed=1, n_filler=32, n_topic_words=4, n_topics=2)
    tokenizer.train_bpe([d.text for d in docs], 400, tmp_path / "tok")
    tok = tokenizer.load_tokenizer(tmp_path / "tok")
    ids = tokenizer.encode_documents(tok, [d.text for d in docs])
    w = windows.cut_windows(ids, 16, 200, 0, tok.bos_token_id)["tokens"]
    arch = {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64, "act_fn": "gelu", "n_ctx": 16, "seed": 0}
    torch.manual_seed(0)
    model = lm.build_model(arch, tmp_path / "tok")
    before = lm.eval_loss(model, w[:32])
    curve = lm.train_lm(model, w[32:], w[:32], steps=60, batch_size=16, lr=3e-3, seed=0, progress=False)
    assert curve[-1]["eval_loss"] < before - 0.5
    assert {"step", "tokens", "train_loss", "lr", "eval_loss"} <= set(curve[-1])
    lm.save_model(model, tmp_path / "m", arch)
    again = lm.load_model(tmp_path / "m")
    x = torch.as_tensor(w[:4])
    torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
    assert again.tokenizer.bos_token_id == tok.bos_token_id


def test_make_config_rejects_missing_keys():
    import pytest

    with pytest.raises(ValueError, match="n_ctx"):
        lm.make_config({"n_layers": 1, "d_model": 8, "n_heads": 1, "d_mlp": 8, "act_fn": "gelu"}, 10)
