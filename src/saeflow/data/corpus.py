"""Corpora as lists of `Document`s (the token windows the models read are cut by saeflow.data.windows).

Three sources, and mixtures of them:
- `stdlib_documents`: real Python code from the running interpreter's standard library (offline);
- `synthetic_documents`: pseudo-word text with planted structure, a ground truth for locality metrics;
- `load_hf_documents`: the Parquet files of a Hugging Face dataset split, pinned by revision;
- `mix_documents`: several corpora as one, labelled by part (e.g. code vs math, a steering contrast).

Each source has an identity function (a sha256 hex string) that the workflow uses as a cache key; they are
cheap enough to call while the Snakefile is parsed. Heavy libraries are imported inside functions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import sysconfig
import tokenize
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Document",
    "stdlib_files",
    "stdlib_identity",
    "stdlib_documents",
    "synthetic_documents",
    "synthetic_word_kinds",
    "load_hf_documents",
    "hf_identity",
    "group_rows",
    "mix_documents",
]


@dataclass(frozen=True)
class Document:
    """One document. `label` is a planted label where one exists, else -1; `group` a second integer label where a
    dataset has one to balance by (bias_in_bios: gender), else -1."""

    doc_id: int
    source: str
    text: str
    label: int = -1
    group: int = -1


_TEST_DIRS = {"test", "tests", "idle_test"}


def _stdlib_root() -> pathlib.Path:
    return pathlib.Path(sysconfig.get_paths()["stdlib"])


def _stdlib_names(root: pathlib.Path) -> list[str]:
    """Names accepted by `stdlib_files`: top-level packages (with __init__.py) and single modules."""
    names = []
    for entry in os.scandir(root):
        if entry.name in _TEST_DIRS:
            continue
        if entry.is_dir() and os.path.isfile(os.path.join(entry.path, "__init__.py")):
            names.append(entry.name)
        elif entry.is_file() and entry.name.endswith(".py"):
            names.append(entry.name[:-3])
    return sorted(names)


def stdlib_files(
    packages: list[str], max_files: int | None = None, max_bytes: int = 200_000
) -> list[tuple[str, pathlib.Path]]:
    """The standard-library `.py` files of `packages`, as (relative posix path, absolute path) pairs.

    A name is a top-level package ("json", "email") or a single module ("argparse" -> argparse.py) of
    `sysconfig.get_paths()["stdlib"]`. Packages come in the order given; within a package, files are sorted
    by relative path, test directories (test/, tests/, idle_test/) and files larger than `max_bytes` are
    skipped, and with `max_files` only the first `max_files` are kept. Unknown names raise ValueError.
    """
    if isinstance(packages, str) or not packages or len(set(packages)) != len(packages):
        raise ValueError(f"packages must be a non-empty list of distinct names, got {packages!r}")
    if max_files is not None and max_files < 1:
        raise ValueError(f"max_files must be None or >= 1, got {max_files!r}")
    root = _stdlib_root()
    allowed = _stdlib_names(root)
    out: list[tuple[str, pathlib.Path]] = []
    for name in packages:
        if name not in allowed:
            public = [a for a in allowed if not a.startswith("_")]
            raise ValueError(
                f"packages: unknown standard-library package or module {name!r}; allowed names are the "
                f"top-level packages and modules of {root}, e.g. {', '.join(public[:30])}, ..."
            )
        if (root / name).is_dir():
            found = []
            for dirpath, dirnames, filenames in os.walk(root / name):
                dirnames[:] = [d for d in dirnames if d not in _TEST_DIRS and d != "__pycache__"]
                found += [pathlib.Path(dirpath, f) for f in filenames if f.endswith(".py")]
        else:
            found = [root / f"{name}.py"]
        rel = sorted((p.relative_to(root).as_posix(), p) for p in found if p.stat().st_size <= max_bytes)
        out += rel[:max_files] if max_files is not None else rel
    return out


def stdlib_identity(packages: list[str], max_files: int | None = None, max_bytes: int = 200_000) -> str:
    """sha256 hex over (relative path, bytes) of exactly the files `stdlib_documents` would read."""
    h = hashlib.sha256(b"saeflow.stdlib.v1\0")
    for rel, path in stdlib_files(packages, max_files, max_bytes):
        data = path.read_bytes()
        # Length prefixes make the byte stream unambiguous (no path/content boundary confusion).
        h.update(f"{len(rel)}:{rel}:{len(data)}:".encode())
        h.update(data)
    return h.hexdigest()


def _decode_source(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:  # a PEP 263 coding cookie names another encoding
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        return data.decode(encoding)


def stdlib_documents(
    packages: list[str], max_files: int | None = None, max_bytes: int = 200_000
) -> list[Document]:
    """One Document per file of `stdlib_files`; source = relative path, label = index in `packages`."""
    docs = []
    for rel, path in stdlib_files(packages, max_files, max_bytes):
        top = rel.split("/", 1)[0].removesuffix(".py")
        docs.append(Document(len(docs), rel, _decode_source(path.read_bytes()), packages.index(top)))
    return docs


_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def _pseudo_words(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct lowercase words of one common length k (so none is a prefix of another).

    k is the smallest length with 26**k >= n, i.e. 2 letters for up to 676 words. Two-letter words are what
    makes every word a single BPE token cheaply: the merges needed are one per leading letter (" a") plus
    one per word, so vocab_size >= n_words + 259 + 26 (bytes, special tokens, leading-letter merges) is
    enough; a longer k needs more intermediate merges.
    """
    k = 1
    while 26**k < n:
        k += 1
    codes = rng.choice(26**k, size=n, replace=False)
    digits = (codes[:, None] // 26 ** np.arange(k - 1, -1, -1)) % 26
    return ["".join(row) for row in _LETTERS[digits]]


def synthetic_documents(
    n_docs: int,
    doc_len: int,
    seed: int,
    lag: int = 4,
    n_topics: int = 4,
    n_filler: int = 256,
    n_topic_words: int = 32,
    p_lag: float = 0.15,
    p_topic: float = 0.15,
) -> tuple[list[Document], dict]:
    """A corpus of pseudo-word documents with planted structure; fully determined by the arguments.

    Every document has `doc_len` words, each written with one leading space (text = " w1 w2 ..."), so a
    byte-level BPE sees every word as the same pre-token " word" and each word can become one token. The
    document's hidden topic z is uniform in [0, n_topics) and is its label. Each position independently is
      - "echo" with probability p_lag: the word is ECHO[w_{t-lag}], where ECHO maps filler word i to echo
        word i, i.e. fully determined by the single word `lag` positions back; when t < lag or w_{t-lag}
        is not a filler word, a filler word is emitted instead;
      - "topic" with probability p_topic: a uniform word of topic z's own set (identifiable only from the
        whole document);
      - "filler" otherwise: a uniform filler word.
    Filler, echo and topic words are disjoint sets, so `synthetic_word_kinds` recovers each position's kind.
    Words are 2 letters while there are at most 676 of them; a BPE from `saeflow.data.tokenizer.train_bpe` then
    learns each as one token given vocab_size >= n_words + 300 and enough text that every word, including
    the rarer echo words, occurs min_frequency times.
    Returns (documents, meta); meta is JSON-serialisable: all parameters plus
    meta["words"] = {"filler": [...], "echo": [...] (echo[i] = ECHO[filler[i]]), "topic": [[...], ...]}.
    """
    sizes = dict(n_docs=n_docs, doc_len=doc_len, lag=lag, n_topics=n_topics, n_filler=n_filler,
                  n_topic_words=n_topic_words)
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if not (0 <= p_lag and 0 <= p_topic and p_lag + p_topic <= 1):
        raise ValueError(f"p_lag and p_topic must be >= 0 with p_lag + p_topic <= 1, got {p_lag!r}, {p_topic!r}")
    rng = np.random.default_rng(seed)
    words = _pseudo_words(2 * n_filler + n_topics * n_topic_words, rng)
    # Word ids: [0, F) filler, [F, 2F) echo (echo id = filler id + F), then topic z's words in a block.
    F, K = n_filler, n_topic_words
    topics = rng.integers(n_topics, size=n_docs)
    u = rng.random((n_docs, doc_len))
    filler = rng.integers(F, size=(n_docs, doc_len))
    topical = 2 * F + topics[:, None] * K + rng.integers(K, size=(n_docs, doc_len))
    ids = np.where((u >= p_lag) & (u < p_lag + p_topic), topical, filler)
    echo = u < p_lag
    # Sequential in t (vectorised over documents) because an echo depends on the final word at t - lag.
    for t in range(lag, doc_len):
        src = ids[:, t - lag]
        hit = echo[:, t] & (src < F)
        ids[hit, t] = src[hit] + F
    vocab = np.array(words, dtype=object)
    docs = [
        Document(i, f"synthetic/{i}", "".join(" " + w for w in vocab[row]), int(topics[i]))
        for i, row in enumerate(ids)
    ]
    meta = {
        "generator": "saeflow.synthetic.v1",
        **{name: int(value) for name, value in sizes.items()},
        "seed": int(seed), "p_lag": float(p_lag), "p_topic": float(p_topic),
        "words": {
            "filler": words[:F],
            "echo": words[F:2 * F],
            "topic": [words[2 * F + z * K : 2 * F + (z + 1) * K] for z in range(n_topics)],
        },
    }
    return docs, meta


def synthetic_word_kinds(doc: Document, meta: dict) -> list[str]:
    """The kind of each word of a synthetic document: "filler", "echo" or "topic" (from word identity)."""
    kind = {w: "filler" for w in meta["words"]["filler"]}
    kind.update({w: "echo" for w in meta["words"]["echo"]})
    kind.update({w: "topic" for ws in meta["words"]["topic"] for w in ws})
    try:
        return [kind[w] for w in doc.text.split()]
    except KeyError as e:
        raise ValueError(f"doc: word {e.args[0]!r} is not a word of this synthetic corpus (meta)") from None


_FLOATING_REVISIONS = {"main", "master", "head"}


def _check_revision(revision) -> None:
    # A branch name moves; only a commit sha or tag makes the cache key mean the same data tomorrow.
    if not isinstance(revision, str) or not revision.strip() or revision.lower() in _FLOATING_REVISIONS:
        raise ValueError(
            f"revision must be a pinned commit sha or tag (a non-empty string, not a branch such as 'main'), "
            f"got {revision!r}"
        )


def hf_identity(repo: str, revision: str, split: str, config: str | None = None) -> str:
    """sha256 hex of the canonical JSON of (repo, revision, config, split); `revision` must be pinned."""
    _check_revision(revision)
    if not repo or not split:
        raise ValueError(f"repo and split must be non-empty strings, got {repo!r}, {split!r}")
    key = {"kind": "hf", "repo": repo, "revision": revision, "config": config, "split": split}
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _split_of(rel: str) -> tuple[str, str]:
    """(config prefix, split name) a Parquet path names: "cfg/train-00000-of-00001.parquet" -> ("cfg",
    "train"); "cfg/train/0000.parquet" -> ("cfg", "train"); "data/..." is the default config ("")."""
    parts = rel.split("/")
    # Shard suffixes as the hub writes them: "-00000-of-00001", "-0000", or none.
    stem = re.fullmatch(r"(.*?)(-\d+(-of-\d+)?)?\.parquet", parts[-1]).group(1)
    if stem.isdigit() and len(parts) >= 2:  # "train/0000.parquet": the directory names the split
        prefix, split = parts[:-2], parts[-2]
    else:
        prefix, split = parts[:-1], stem
    if prefix and prefix[-1] == "data":
        prefix = prefix[:-1]
    return "/".join(prefix), split


def load_hf_documents(
    repo: str,
    revision: str,
    split: str,
    text_column: str = "text",
    label_column: str | None = None,
    local_dir: str | None = None,
    max_docs: int | None = None,
    config: str | None = None,
    data_files: str | None = None,
    group_column: str | None = None,
) -> list[Document]:
    """Documents of one split of a Hugging Face dataset stored as Parquet files.

    With `local_dir` None, the Parquet files of `repo` at the pinned `revision` are fetched with
    `huggingface_hub.snapshot_download(repo_type="dataset")`; otherwise they are read from `local_dir`
    (no network). A file belongs to `split` when its name is the split plus a shard suffix
    ("train-00000-of-00001.parquet", "train_sft-0000.parquet", "train.parquet") or its directory is named
    after it ("train/0000.parquet"). `config` selects the folder above that where a repository holds several
    ("wikitext-2-raw-v1/test-....parquet"; "" means files under data/ or at the top) and is required when
    the split's files span more than one. Files are read in path order, rows in file order; rows whose text is empty or only
    whitespace are skipped. source = "<relative path>:<row>", label = the integer in label_column (anything else is refused) or -1.
    Missing columns, splits or configs raise ValueError naming what is available.
    `text_column` may be a list: the columns are joined with a newline (e.g. gsm8k question and answer).
    `data_files` (a glob relative to the repo root, e.g. "data/python/*.json") selects the files instead of
    the split name; Parquet and JSON-lines (.json / .jsonl) files are read. `group_column`: a second integer column,
    kept as each document's `group` (what SAEBench balances classes by).
    """
    import pyarrow.parquet as pq

    _check_revision(revision)
    if max_docs is not None and max_docs < 1:
        raise ValueError(f"max_docs must be None or >= 1, got {max_docs!r}")
    if local_dir is None:
        from huggingface_hub import snapshot_download

        local_dir = snapshot_download(
            repo_id=repo, repo_type="dataset", revision=revision,
            allow_patterns=[data_files] if data_files else ["*.parquet", "**/*.parquet"]
        )
    root = pathlib.Path(local_dir)
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if data_files:
        if group_column:
            raise ValueError("group_column is read from Parquet splits only, not with data_files")
        return _load_data_files(root, data_files, text_columns, label_column, max_docs)
    # snapshot_download(local_dir=...) keeps its metadata under .cache/; the hub cache itself lives under
    # ~/.cache, so only the part of the path inside root is checked.
    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.parquet"))
    rels = [rel for rel in rels if not rel.startswith(".cache/")]
    named = {rel: _split_of(rel) for rel in rels}
    files = [rel for rel, (cfg, s) in named.items() if s == split and (config is None or cfg == config)]
    if not files:
        found = sorted({f"{cfg}/{s}" if cfg else s for cfg, s in named.values()})
        raise ValueError(
            f"split: no Parquet files of split {split!r}"
            + (f" in config {config!r}" if config else "")
            + f" under {root}; splits found (config/split): {found or 'none'}"
        )
    configs = sorted({named[rel][0] for rel in files})
    if len(configs) > 1:
        raise ValueError(f"config: split {split!r} exists in several configs, choose one of {configs}")
    columns = text_columns + ([label_column] if label_column else []) + ([group_column] if group_column else [])
    docs: list[Document] = []
    for rel in files:
        pf = pq.ParquetFile(root / rel)
        missing = [c for c in columns if c not in pf.schema_arrow.names]
        if missing:
            raise ValueError(
                f"text_column/label_column: column(s) {missing} not in {rel}; available columns: "
                f"{pf.schema_arrow.names}"
            )
        row = 0
        for batch in pf.iter_batches(columns=columns):
            texts = _joined(batch.column(c).to_pylist() for c in text_columns)
            labels = batch.column(label_column).to_pylist() if label_column else [-1] * len(texts)
            groups = batch.column(group_column).to_pylist() if group_column else None
            if _add_rows(docs, rel, row, texts, labels, max_docs, groups):
                return docs
            row += len(texts)
    return docs


def _int_label(label, where: str) -> int:
    """A label as an int: ints only (a bool, a float such as 1.7 or even 1.0, a string such as "3" or a null
    would be truncated or guessed by int(), so they are refused naming the row)."""
    import numbers

    if isinstance(label, bool) or not isinstance(label, numbers.Integral):
        raise ValueError(f"label_column: the label of {where} is {label!r} ({type(label).__name__}); labels must be "
                         "integers")
    return int(label)


def _add_rows(docs: list[Document], rel: str, first_row: int, texts: list, labels: list, max_docs: int | None,
              groups: list | None = None) -> bool:
    """Append the non-empty rows of one file's batch (source "<rel>:<row>"); True once max_docs is reached."""
    for i, (text, label) in enumerate(zip(texts, labels)):
        row = first_row + i
        if text is not None and text.strip():
            group = -1 if groups is None else _int_label(groups[i], f"{rel}:{row} (group column)")
            docs.append(Document(len(docs), f"{rel}:{row}", text, _int_label(label, f"{rel}:{row}"), group))
            if max_docs is not None and len(docs) >= max_docs:
                return True
    return False


def _joined(columns) -> list:
    """Row-wise newline join of text columns (None when any part is None)."""
    cols = list(columns)
    return [None if any(v is None for v in vals) else "\n".join(vals) for vals in zip(*cols)]


def _load_data_files(root: pathlib.Path, pattern: str, text_columns: list[str], label_column: str | None,
                     max_docs: int | None) -> list[Document]:
    """Documents of the files under root matching `pattern` (Parquet or JSON lines), in path order."""
    import fnmatch

    import pandas as pd

    rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    files = [r for r in rels if fnmatch.fnmatch(r, pattern) and not r.startswith(".cache/")]
    if not files:
        raise ValueError(f"data_files: no file under {root} matches {pattern!r}")
    columns = text_columns + ([label_column] if label_column else [])
    docs: list[Document] = []
    for rel in files:
        df = pd.read_parquet(root / rel) if rel.endswith(".parquet") else pd.read_json(root / rel, lines=True)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"text_column/label_column: column(s) {missing} not in {rel}; available columns: "
                             f"{list(df.columns)}")
        texts = _joined(df[c].tolist() for c in text_columns)
        labels = df[label_column].tolist() if label_column else [-1] * len(texts)
        if _add_rows(docs, rel, 0, texts, labels, max_docs):
            return docs
    return docs


def group_rows(docs: list[Document], rows_per_doc: int = 1, doc_start_pattern: str | None = None) -> list[Document]:
    """Join consecutive rows of the same file into documents, so windows can span them.

    doc_start_pattern (a regex): a new document starts at each row that matches it (wikitext stores one
    line per row and an article starts at its ` = Title = ` row); rows_per_doc: at most this many rows per
    document (e.g. 8 gsm8k problems). Rows are joined without a separator when a pattern is given (the rows
    keep their own newlines), else with a blank line. Labels must agree within a document (else -1).
    """
    if rows_per_doc == 1 and doc_start_pattern is None:
        return docs
    start = re.compile(doc_start_pattern) if doc_start_pattern else None
    groups: list[list[Document]] = []
    for d in docs:
        file = d.source.rsplit(":", 1)[0]
        g = groups[-1] if groups else None
        new = (g is None or g[0].source.rsplit(":", 1)[0] != file or len(g) >= rows_per_doc > 1
               or (start is not None and start.match(d.text) is not None))
        if new:
            groups.append([d])
        else:
            g.append(d)
    sep = "" if start is not None else "\n\n"
    out = []
    for g in groups:
        labels = {r.label for r in g}
        out.append(Document(len(out), g[0].source, sep.join(r.text for r in g), labels.pop() if len(labels) == 1 else -1))
    return out


def mix_documents(parts: list[list[Document]], names: list[str], max_docs_per_part: int | None = None,
                  seed: int = 0, balance: bool = True) -> list[Document]:
    """One corpus from several: document label = index of its part in ``parts`` (so a mixture of code and
    math text is a labelled two-class corpus), source = ``"<name>/<source in the part>"``, doc_id = position.

    Each part contributes its first ``max_docs_per_part`` documents (all if None; the parts' own order, so
    the choice does not depend on the other parts). ``balance``: then each part keeps its first documents
    up to the characters of the smallest part (the document that crosses the budget included), because
    windows are drawn in proportion to text length (saeflow.data.windows.cut_windows), so a part of long
    files would otherwise fill nearly every window. The result is shuffled with ``seed`` so that no part
    sits at one end. A part's own labels are dropped. Raises ValueError for an empty part.
    """
    if len(parts) != len(names) or len(parts) < 2:
        raise ValueError(f"mix_documents needs >= 2 parts, one name each; got {len(parts)} parts, {len(names)} names")
    kept = []
    for docs, name in zip(parts, names):
        docs = [d for d in docs[:max_docs_per_part] if d.text]
        if not docs:
            raise ValueError(f"parts: dataset {name!r} of the mixture has no documents")
        kept.append(docs)
    budget = min(sum(len(d.text) for d in docs) for docs in kept) if balance else None
    picked = []
    for i, (docs, name) in enumerate(zip(kept, names)):
        chars = 0
        for d in docs:
            if budget is not None and chars >= budget:
                break
            picked.append((f"{name}/{d.source}", d.text, i))
            chars += len(d.text)
    order = np.random.default_rng(seed).permutation(len(picked))
    return [Document(j, *picked[o]) for j, o in enumerate(order)]
