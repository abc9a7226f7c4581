"""Tests of saeflow.data.tokenizer: a byte-level BPE trained on the synthetic corpus, saved and loaded back."""

import math

import numpy as np
import pytest

from saeflow.data import corpus
from saeflow.data import tokenizer as T


@pytest.fixture(scope="module")
def synthetic():
    # Enough text that even the rarest (echo) words occur >= min_frequency=2 times (mean ~16).
    return corpus.synthetic_documents(n_docs=300, doc_len=128, seed=0)


def _all_words(meta):
    w = meta["words"]
    return w["filler"] + w["echo"] + [x for ws in w["topic"] for x in ws]


@pytest.fixture(scope="module")
def tok_dir(synthetic, tmp_path_factory):
    docs, meta = synthetic
    out = tmp_path_factory.mktemp("tok")
    T.train_bpe((d.text for d in docs), vocab_size=len(_all_words(meta)) + 300, out_dir=out)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return T.load_tokenizer(tok_dir)


def test_saved_and_loaded(tok_dir, tok):
    assert (tok_dir / "tokenizer.json").is_file() and (tok_dir / "tokenizer_config.json").is_file()
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == T.SPECIAL_TOKENS
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2)
    assert tok.convert_ids_to_tokens([0, 1, 2]) == list(T.SPECIAL_TOKENS)
    # TransformerLens reloads from name_or_path; AutoTokenizer must find the same tokenizer there.
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(tok.name_or_path)
    assert auto("hello world")["input_ids"] == tok("hello world")["input_ids"]


def test_round_trip(synthetic, tok):
    docs, _ = synthetic
    texts = [docs[0].text, "def f(x):\n    return {'ä': x ** 2}  # ✓ \t tabs", "", "  two  spaces "]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert tok.decode(ids) == text
        assert 0 not in ids  # no BOS added by encoding


def test_every_synthetic_word_is_one_token(synthetic, tok):
    _, meta = synthetic
    words = _all_words(meta)
    ids = [tok(" " + w)["input_ids"] for w in words]
    assert all(len(i) == 1 for i in ids)
    assert len({i[0] for i in ids}) == len(words)
    docs, _ = synthetic
    assert all(len(x) == 128 for x in T.encode_documents(tok, [d.text for d in docs[:10]]))


def test_encode_documents_matches_tokenizer(synthetic, tok):
    docs, _ = synthetic
    texts = [d.text for d in docs[:5]] + ["import os\nprint(os.sep)", ""]
    enc = T.encode_documents(tok, texts)
    assert len(enc) == len(texts)
    for ids, text in zip(enc, texts):
        assert ids.dtype == np.int32
        assert ids.tolist() == tok(text)["input_ids"]


def test_training_is_deterministic(synthetic, tok_dir, tmp_path):
    docs, meta = synthetic
    T.train_bpe([d.text for d in docs], vocab_size=len(_all_words(meta)) + 300, out_dir=tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == (tok_dir / "tokenizer.json").read_bytes()


def test_train_rejects_bad_vocab(tmp_path):
    with pytest.raises(ValueError, match="vocab_size"):
        T.train_bpe(["a b c"], vocab_size=100, out_dir=tmp_path)


def test_unigram_entropy_bits():
    assert T.unigram_entropy_bits([np.array([0, 1]), np.array([2, 3])], vocab_size=10) == pytest.approx(2.0)
    assert T.unigram_entropy_bits([np.array([5, 5, 5])], vocab_size=6) == pytest.approx(0.0)
    p = np.array([0.5, 0.25, 0.25])
    h = T.unigram_entropy_bits([np.array([0, 0, 1, 2])], vocab_size=3)
    assert h == pytest.approx(-(p * np.log2(p)).sum()) == pytest.approx(1.5)
    assert T.unigram_entropy_bits([np.arange(8)], 8) == pytest.approx(math.log2(8))
    with pytest.raises(ValueError, match="vocab_size"):
        T.unigram_entropy_bits([np.array([0, 7])], vocab_size=7)
    with pytest.raises(ValueError, match="token"):
        T.unigram_entropy_bits([np.zeros(0, dtype=np.int32)], vocab_size=7)
