"""Tests of saeflow.data.corpus: stdlib, synthetic and Hugging Face corpora, splits and windows (offline)."""

import ast
import json

import numpy as np
import pytest

from saeflow.data import corpus, windows
from saeflow.data.corpus import Document

PKGS = ["json", "argparse", "email"]


# ---------------------------------------------------------------------------------------------- stdlib


def test_stdlib_files_deterministic_and_filtered():
    files = corpus.stdlib_files(PKGS)
    assert files == corpus.stdlib_files(PKGS)
    rels = [rel for rel, _ in files]
    assert "json/decoder.py" in rels and "argparse.py" in rels and "email/message.py" in rels
    for pkg in ("json", "email"):
        own = [r for r in rels if r.startswith(pkg + "/")]
        assert own == sorted(own)
    assert not any(part in ("test", "tests", "idle_test") for r in rels for part in r.split("/"))
    # Packages keep the order given; max_files keeps the first files of each package.
    capped = corpus.stdlib_files(PKGS, max_files=2)
    email = [r for r in rels if r.startswith("email/")]
    assert [r for r, _ in capped] == rels[:2] + ["argparse.py"] + email[:2]
    small = corpus.stdlib_files(PKGS, max_bytes=5_000)
    assert small and all(p.stat().st_size <= 5_000 for _, p in small)
    assert "argparse.py" not in [r for r, _ in small]
    assert "idlelib/idle_test" not in " ".join(r for r, _ in corpus.stdlib_files(["idlelib"]))


def test_stdlib_identity():
    h = corpus.stdlib_identity(PKGS)
    assert h == corpus.stdlib_identity(PKGS) and len(h) == 64
    assert h != corpus.stdlib_identity(["json", "argparse"])
    assert h != corpus.stdlib_identity(PKGS, max_files=3)
    assert h != corpus.stdlib_identity(list(reversed(PKGS)))


@pytest.mark.parametrize("bad", [["no_such_pkg"], ["json", "json"], [], "json", ["json/decoder"]])
def test_stdlib_rejects_bad_packages(bad):
    with pytest.raises(ValueError, match="packages"):
        corpus.stdlib_files(bad)


def test_stdlib_unknown_package_lists_allowed():
    with pytest.raises(ValueError, match="argparse"):
        corpus.stdlib_files(["no_such_pkg"])


def test_stdlib_documents_are_real_code():
    docs = corpus.stdlib_documents(PKGS, max_files=5)
    assert [d.doc_id for d in docs] == list(range(len(docs)))
    assert {d.label for d in docs} == {0, 1, 2}
    for d in docs:
        assert d.label == PKGS.index(d.source.split("/")[0].removesuffix(".py"))
        ast.parse(d.text)  # every document is valid Python source
    assert any("def " in d.text for d in docs)


# ------------------------------------------------------------------------------------------- synthetic

SYN = dict(n_docs=60, doc_len=200, seed=3)


def _words_and_kinds(meta, docs):
    return [(d.text.split(), corpus.synthetic_word_kinds(d, meta)) for d in docs]


def test_synthetic_deterministic():
    a, meta_a = corpus.synthetic_documents(**SYN)
    b, meta_b = corpus.synthetic_documents(**SYN)
    assert a == b and meta_a == meta_b
    json.dumps(meta_a)  # metadata is JSON-serialisable
    c, meta_c = corpus.synthetic_documents(**{**SYN, "seed": 4})
    assert [d.text for d in c] != [d.text for d in a] and meta_c["words"] != meta_a["words"]


def test_synthetic_word_sets():
    docs, meta = corpus.synthetic_documents(**SYN)
    w = meta["words"]
    topic = [x for ws in w["topic"] for x in ws]
    everything = w["filler"] + w["echo"] + topic
    assert len(set(everything)) == len(everything) == 2 * 256 + 4 * 32
    assert len({len(x) for x in everything}) == 1  # equal lengths: no word is a prefix of another
    assert all(x.isalpha() and x.islower() for x in everything)
    # Text format: every word carries one leading space.
    assert all(d.text.startswith(" ") and "  " not in d.text and len(d.text.split()) == 200 for d in docs)
    assert all(d.source == f"synthetic/{d.doc_id}" for d in docs)


def test_synthetic_echo_rule_and_topics():
    lag = 3
    docs, meta = corpus.synthetic_documents(**SYN, lag=lag)
    echo_of = dict(zip(meta["words"]["filler"], meta["words"]["echo"]))
    n_echo = 0
    for d, (words, kinds) in zip(docs, _words_and_kinds(meta, docs)):
        own_topic = set(meta["words"]["topic"][d.label])
        for t, (w, k) in enumerate(zip(words, kinds)):
            if k == "echo":
                n_echo += 1
                assert t >= lag and echo_of[words[t - lag]] == w
            elif k == "topic":
                assert w in own_topic
    assert n_echo > 0
    assert {d.label for d in docs} == set(range(4))


def test_synthetic_kind_frequencies():
    p_lag, p_topic = 0.2, 0.1
    docs, meta = corpus.synthetic_documents(**SYN, p_lag=p_lag, p_topic=p_topic)
    kinds = np.array([k for _, ks in _words_and_kinds(meta, docs) for k in ks])
    n = kinds.size
    # An echo position needs a filler word lag back (else it falls back to filler): P(filler) =
    # 1 - p_topic - P(echo), so P(echo) = p_lag * (1 - p_topic) / (1 + p_lag) away from the document start.
    p_echo = p_lag * (1 - p_topic) / (1 + p_lag)
    for kind, p in [("topic", p_topic), ("echo", p_echo), ("filler", 1 - p_topic - p_echo)]:
        assert abs((kinds == kind).mean() - p) < 4 * np.sqrt(p * (1 - p) / n) + 0.005, kind


def test_synthetic_rejects_bad_parameters():
    with pytest.raises(ValueError, match="p_lag"):
        corpus.synthetic_documents(2, 10, 0, p_lag=0.8, p_topic=0.5)
    with pytest.raises(ValueError, match="lag"):
        corpus.synthetic_documents(2, 10, 0, lag=0)
    docs, meta = corpus.synthetic_documents(2, 10, 0)
    with pytest.raises(ValueError, match="doc"):
        corpus.synthetic_word_kinds(Document(0, "x", "hello world"), meta)


# ---------------------------------------------------------------------------------------- Hugging Face

REV = "0123456789abcdef0123456789abcdef01234567"


def _write_parquet(path, **columns):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


@pytest.fixture
def hf_dir(tmp_path):
    """Two layouts side by side: data/<split>-*.parquet and <config>/<split>-*.parquet."""
    root = tmp_path / "repo"
    _write_parquet(root / "data/train-00001-of-00002.parquet", text=["c", "d"], label=[2, 3])
    _write_parquet(root / "data/train-00000-of-00002.parquet", text=["a", "", "b"], label=[0, 9, 1])
    _write_parquet(root / "data/test-00000-of-00001.parquet", text=["t"], label=[5])
    _write_parquet(root / "wiki-2/test-0000.parquet", text=["w1", " \n", "w2"])
    _write_parquet(root / "wiki-2/train-0000.parquet", text=["x"])
    return root


def test_hf_local_layout_data_dir(tmp_path):
    root = tmp_path / "r"
    _write_parquet(root / "data/train-00001-of-00002.parquet", text=["c", "d"], label=[2, 3])
    _write_parquet(root / "data/train-00000-of-00002.parquet", text=["a", "", "b"], label=[0, 9, 1])
    _write_parquet(root / "data/test-00000-of-00001.parquet", text=["t"], label=[5])
    docs = corpus.load_hf_documents("o/r", REV, "train", label_column="label", local_dir=str(root))
    assert [d.text for d in docs] == ["a", "b", "c", "d"]  # files by path, rows in order, empty skipped
    assert [d.label for d in docs] == [0, 1, 2, 3]
    assert [d.doc_id for d in docs] == [0, 1, 2, 3]
    assert docs[1].source == "data/train-00000-of-00002.parquet:2"
    assert [d.text for d in corpus.load_hf_documents("o/r", REV, "test", local_dir=str(root))] == ["t"]
    assert len(corpus.load_hf_documents("o/r", REV, "train", local_dir=str(root), max_docs=3)) == 3
    assert all(d.label == -1 for d in corpus.load_hf_documents("o/r", REV, "train", local_dir=str(root)))


def test_hf_local_layout_config_dirs(tmp_path):
    root = tmp_path / "r"
    _write_parquet(root / "wiki-2/test-0000.parquet", text=["w1", " \n", "w2"])
    _write_parquet(root / "wiki-103/test-0000.parquet", text=["big"])
    _write_parquet(root / "default/validation/0000.parquet", text=["v"])
    docs = corpus.load_hf_documents("o/r", REV, "test", local_dir=str(root), config="wiki-2")
    assert [d.text for d in docs] == ["w1", "w2"]
    assert [d.text for d in corpus.load_hf_documents("o/r", REV, "validation", local_dir=str(root))] == ["v"]
    with pytest.raises(ValueError, match="wiki-103"):  # ambiguous: the split exists in two configs
        corpus.load_hf_documents("o/r", REV, "test", local_dir=str(root))


def test_hf_errors(hf_dir):
    with pytest.raises(ValueError, match=r"available columns: \['text', 'label'\]"):
        corpus.load_hf_documents("o/r", REV, "train", text_column="body", local_dir=str(hf_dir), config="")
    with pytest.raises(ValueError, match="splits found.*test.*train"):
        corpus.load_hf_documents("o/r", REV, "validation", local_dir=str(hf_dir))
    with pytest.raises(ValueError, match="revision"):
        corpus.load_hf_documents("o/r", "", "train", local_dir=str(hf_dir))


def test_hf_identity():
    h = corpus.hf_identity("o/r", REV, "train")
    assert h == corpus.hf_identity("o/r", REV, "train") and len(h) == 64
    assert h != corpus.hf_identity("o/r", REV, "test")
    assert h != corpus.hf_identity("o/r", REV[::-1], "train")
    assert h != corpus.hf_identity("o/r", REV, "train", config="wiki-2")
    for bad in ["", None, "main"]:
        with pytest.raises(ValueError, match="revision"):
            corpus.hf_identity("o/r", bad, "train")


def test_hf_hub_path_uses_snapshot_download(tmp_path, monkeypatch):
    import huggingface_hub

    # Where the hub cache puts a snapshot (under ~/.cache), with snapshot metadata that must be ignored.
    snap = tmp_path / ".cache/huggingface/hub/datasets--owner--data/snapshots" / REV
    _write_parquet(snap / "wiki-2/test-0000.parquet", text=["w1", " \n", "w2"])
    _write_parquet(snap / "data/test-0000.parquet", text=["other config"])
    _write_parquet(snap / ".cache/huggingface/wiki-2/test-0000.parquet", text=["metadata"])
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(snap)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    docs = corpus.load_hf_documents("owner/data", REV, "test", config="wiki-2")
    assert [d.text for d in docs] == ["w1", "w2"]
    (kw,) = calls
    assert kw["repo_id"] == "owner/data" and kw["revision"] == REV and kw["repo_type"] == "dataset"
    assert "*.parquet" in kw["allow_patterns"]


# ------------------------------------------------------------------------------------- splits, windows


@pytest.mark.parametrize("n_docs,frac", [(100, 0.1), (2, 0.0), (7, 0.5), (1, 0.3), (3, 0.99)])
def test_split_documents(n_docs, frac):
    train, ev = windows.split_documents(n_docs, frac, seed=0)
    assert np.array_equal(np.sort(np.concatenate([train, ev])), np.arange(n_docs))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(ev) > 0)
    assert len(ev) >= (1 if n_docs >= 2 else 0) and len(train) >= 1
    t2, e2 = windows.split_documents(n_docs, frac, seed=0)
    assert np.array_equal(train, t2) and np.array_equal(ev, e2)
    with pytest.raises(ValueError, match="eval_fraction"):
        windows.split_documents(n_docs, 1.0, seed=0)


def test_split_documents_size_and_seed():
    _, ev = windows.split_documents(100, 0.1, seed=0)
    _, ev1 = windows.split_documents(100, 0.1, seed=1)
    assert len(ev) == 10 and not np.array_equal(ev, ev1)


def _token_docs():
    rng = np.random.default_rng(0)
    return [rng.integers(3, 50, size=n).astype(np.int32) for n in (3, 20, 0, 9, 40, 8)]


def test_cut_windows():
    docs, ctx = _token_docs(), 9
    w = windows.cut_windows(docs, ctx, n_windows=30, seed=1, bos_id=0)
    assert w["tokens"].shape == (30, ctx) and w["tokens"].dtype == np.int64
    assert w["doc_idx"].dtype == np.int64 and w["start_idx"].dtype == np.int64
    assert np.all(w["tokens"][:, 0] == 0)
    pairs = list(zip(w["doc_idx"].tolist(), w["start_idx"].tolist()))
    assert pairs == sorted(set(pairs))  # sorted, no duplicates
    for row, d, s in zip(w["tokens"], w["doc_idx"], w["start_idx"]):
        assert len(docs[d]) >= ctx - 1 and np.array_equal(row[1:], docs[d][s : s + ctx - 1])
    w2 = windows.cut_windows(docs, ctx, n_windows=30, seed=1, bos_id=0)
    assert all(np.array_equal(w[k], w2[k]) for k in w)
    w3 = windows.cut_windows(docs, ctx, n_windows=30, seed=2, bos_id=0)
    assert not np.array_equal(w["start_idx"], w3["start_idx"])


def test_cut_windows_exhaustive_and_too_many():
    docs, ctx = _token_docs(), 9
    total = sum(max(len(d) - (ctx - 1) + 1, 0) for d in docs)  # 13 + 2 + 33 + 1 = 49
    w = windows.cut_windows(docs, ctx, n_windows=total, seed=0, bos_id=1)
    assert len(set(zip(w["doc_idx"].tolist(), w["start_idx"].tolist()))) == total
    assert set(w["doc_idx"].tolist()) == {1, 3, 4, 5}  # docs shorter than ctx - 1 give no window
    with pytest.raises(ValueError, match="n_windows"):
        windows.cut_windows(docs, ctx, n_windows=total + 1, seed=0, bos_id=1)
    with pytest.raises(ValueError, match="ctx_len"):
        windows.cut_windows(docs, 1, n_windows=1, seed=0, bos_id=1)


def test_cut_windows_proportional_to_starts():
    # Doc 0 has 1 valid start, doc 1 has 91: draws follow the number of starts, not the document count.
    docs = [np.arange(10), np.arange(100)]
    w = windows.cut_windows(docs, 11, n_windows=46, seed=0, bos_id=0)
    assert (w["doc_idx"] == 1).sum() >= 44


def test_window_filter_rejects_markup_and_empty_text():
    accept = windows.window_filter(min_alpha_frac=0.5, max_markup_frac=0.2)
    assert accept("The tower is 324 metres tall and the tallest structure in Paris.")
    assert not accept(" = = = History = = = \n")
    assert not accept("   \n\n  ")
    assert not accept("| 1 | 2 | 3 | 4 | 5 |")
    assert windows.window_filter() is None  # trivial bounds: no filtering at all


def test_cut_windows_with_filter_samples_only_accepted_windows():
    rng = np.random.default_rng(0)
    docs = [rng.integers(0, 10, size=50) for _ in range(20)]
    accept = lambda body: int(body[0]) % 2 == 0  # noqa: E731
    w = windows.cut_windows(docs, 8, 40, seed=3, bos_id=99, accept=accept)
    assert len(w["tokens"]) == 40 and all(t[1] % 2 == 0 for t in w["tokens"])
    assert len({(d, s) for d, s in zip(w["doc_idx"], w["start_idx"])}) == 40
    again = windows.cut_windows(docs, 8, 40, seed=3, bos_id=99, accept=accept)
    assert (again["tokens"] == w["tokens"]).all()
    # Without a filter the sampling is exactly the unfiltered one.
    assert (windows.cut_windows(docs, 8, 40, seed=3, bos_id=99)["tokens"]
            == windows.cut_windows(docs, 8, 40, seed=3, bos_id=99, accept=None)["tokens"]).all()
    with pytest.raises(ValueError, match="window_filter"):
        windows.cut_windows(docs, 8, 40, seed=3, bos_id=99, accept=lambda body: False)


def test_group_rows_by_article_start_and_by_count():
    D = corpus.Document
    rows = [D(0, "a.parquet:0", " = T = \n", -1), D(1, "a.parquet:1", "Line one.\n", -1),
            D(2, "a.parquet:2", " = = Sub = = \n", -1), D(3, "a.parquet:3", " = U = \n", -1),
            D(4, "a.parquet:4", "More.\n", -1), D(5, "b.parquet:0", "Other.\n", -1)]
    out = corpus.group_rows(rows, doc_start_pattern=r"^ = [^=]")
    assert [(d.doc_id, d.source, d.text) for d in out] == [
        (0, "a.parquet:0", " = T = \nLine one.\n = = Sub = = \n"), (1, "a.parquet:3", " = U = \nMore.\n"),
        (2, "b.parquet:0", "Other.\n")]
    pairs = corpus.group_rows(rows, rows_per_doc=2)
    assert [d.text for d in pairs] == [" = T = \n\n\nLine one.\n", " = = Sub = = \n\n\n = U = \n", "More.\n", "Other.\n"]
    assert corpus.group_rows(rows) is rows


def test_load_hf_documents_data_files_json_lines_and_joined_columns(tmp_path):
    (tmp_path / "data/python").mkdir(parents=True)
    (tmp_path / "data/python/data.json").write_text(
        json.dumps({"content": "def f():\n    return 1\n", "lang": "py"}) + "\n" + json.dumps({"content": " ", "lang": "py"}) + "\n")
    (tmp_path / "data/go").mkdir()
    (tmp_path / "data/go/data.json").write_text(json.dumps({"content": "package main", "lang": "go"}) + "\n")
    docs = corpus.load_hf_documents("a/b", "0" * 40, "train", text_column="content", local_dir=str(tmp_path),
                                    data_files="data/python/*.json")
    assert [(d.source, d.text) for d in docs] == [("data/python/data.json:0", "def f():\n    return 1\n")]
    docs = corpus.load_hf_documents("a/b", "0" * 40, "train", text_column=["lang", "content"], local_dir=str(tmp_path),
                                    data_files="data/go/*")
    assert docs[0].text == "go\npackage main"
    with pytest.raises(ValueError, match="data_files"):
        corpus.load_hf_documents("a/b", "0" * 40, "train", local_dir=str(tmp_path), data_files="nope/*")


def test_mix_documents_labels_by_part_and_is_seeded():
    code = [Document(i, f"f{i}.py", f"def f{i}(): pass", label=7) for i in range(5)]
    math = [Document(i, f"row{i}", f"{i} + {i} = {2 * i}") for i in range(3)]
    mixed = corpus.mix_documents([code, math], ["code", "math"], max_docs_per_part=4, seed=1, balance=False)
    assert [d.doc_id for d in mixed] == list(range(7))
    assert sorted((d.source, d.label) for d in mixed) == sorted(
        [(f"code/f{i}.py", 0) for i in range(4)] + [(f"math/row{i}", 1) for i in range(3)])
    assert all(d.text.startswith("def") == (d.label == 0) for d in mixed)
    again = corpus.mix_documents([code, math], ["code", "math"], max_docs_per_part=4, seed=1, balance=False)
    other = corpus.mix_documents([code, math], ["code", "math"], max_docs_per_part=4, seed=2, balance=False)
    assert again == mixed and [d.source for d in other] != [d.source for d in mixed]
    with pytest.raises(ValueError, match="'math' of the mixture has no documents"):
        corpus.mix_documents([code, []], ["code", "math"])


def test_mix_documents_balances_parts_by_characters():
    """A part of long files is cut to about the characters of the smallest part (windows are drawn by
    length): here 3 short math rows (~30 chars) against 100-char code files keep one code file."""
    code = [Document(i, f"f{i}.py", "x = 1\n" * 17) for i in range(5)]           # 102 chars each
    math = [Document(i, f"row{i}", f"{i} + {i} = {2 * i} ok") for i in range(3)]  # ~12 chars each
    mixed = corpus.mix_documents([code, math], ["code", "math"])
    chars = {z: sum(len(d.text) for d in mixed if d.label == z) for z in (0, 1)}
    assert [d.label for d in mixed].count(0) == 1 and [d.label for d in mixed].count(1) == 3
    assert chars[1] <= chars[0] <= chars[1] + 102


def test_split_documents_stratified_by_label():
    """Labels 0 (50 docs) and 1 (3 docs): each label is split on its own, so both splits hold both labels
    (an unstratified 10% split of 53 would often hold no label-1 document); each label's split follows the
    unstratified rule for its size."""
    labels = np.array([0] * 50 + [1] * 3)
    np.random.default_rng(0).shuffle(labels)
    tr, ev = windows.split_documents(len(labels), 0.1, seed=4, labels=labels)
    assert np.array_equal(np.sort(np.concatenate([tr, ev])), np.arange(len(labels)))
    assert set(labels[ev]) == set(labels[tr]) == {0, 1}
    assert (labels[ev] == 0).sum() == 5 and (labels[ev] == 1).sum() == 1
    assert np.array_equal(windows.split_documents(len(labels), 0.1, 4, labels)[1], ev)
    with pytest.raises(ValueError, match="labels: 2 labels for 53 documents"):
        windows.split_documents(53, 0.1, 4, labels=[0, 1])
