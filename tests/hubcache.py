"""A Hugging Face hub cache populated by hand, so hub loaders run offline (HF_HUB_OFFLINE=1).

Layout written (huggingface_hub's cache, as a real download leaves it)::

    <cache>/models--<org>--<name>/blobs/<sha256 of the file>
    <cache>/models--<org>--<name>/snapshots/<commit>/<path in repo>  -> ../../blobs/<sha256> (relative symlink)
    <cache>/models--<org>--<name>/refs/<ref>                          (the commit hash, no newline)

With ``use_hub_cache`` active, ``hf_hub_download(repo, path[, revision=<commit or ref>])``,
``snapshot_download(repo, allow_patterns=...)`` and everything built on them (``SAE.from_pretrained``,
``SparseCoder.load_from_hub``) resolve from this cache: in offline mode huggingface_hub maps the revision to
a commit through ``refs/`` (a 40-hex revision is used as the commit directly) and returns
``snapshots/<commit>/<path>``; a file missing there raises ``LocalEntryNotFoundError``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from saeflow.workflow.store import sha256_file


def repo_folder(cache_dir: str | Path, repo_id: str) -> Path:
    return Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))


def populate_hub_cache(cache_dir: str | Path, repo_id: str, src: str | Path, ref: str = "main",
                       commit: str | None = None) -> str:
    """Put every file under ``src`` (a repo snapshot: paths relative to src are paths in the repo) into the
    cache as commit ``commit`` (default: a hash of the content) of ``repo_id`` and point ``refs/<ref>`` at it.
    Blobs are hard links when possible (large files cost nothing), copies otherwise. Returns the commit."""
    src = Path(src)
    files = sorted(p for p in src.rglob("*") if p.is_file())
    if not files:
        raise ValueError(f"no files under {src}")
    digests = {p: sha256_file(p) for p in files}
    if commit is None:
        listing = "".join(f"{p.relative_to(src).as_posix()}\0{d}\n" for p, d in digests.items())
        commit = hashlib.sha1(listing.encode()).hexdigest()
    repo = repo_folder(cache_dir, repo_id)
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    snapshot = repo / "snapshots" / commit
    for p, digest in digests.items():
        blob = repo / "blobs" / digest
        if not blob.exists():
            try:
                os.link(p, blob)
            except OSError:
                shutil.copyfile(p, blob)
        link = snapshot / p.relative_to(src)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs" / ref).write_text(commit)
    return commit


def use_hub_cache(monkeypatch, cache_dir: str | Path) -> Path:
    """Point huggingface_hub at ``cache_dir`` and force offline mode for the rest of the test.

    Sets HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE and also patches ``huggingface_hub.constants`` (read once at
    import, so the environment alone would not reach an already-imported huggingface_hub).
    """
    import huggingface_hub.constants as C

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HOME", str(cache_dir.parent / "hf_home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache_dir))
    monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    return cache_dir
