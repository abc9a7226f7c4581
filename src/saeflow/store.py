"""The content-addressed store: atomic artefact directories with a manifest.

An artefact is the directory `<store>/<step>/<key>/`. It is written in a sibling temporary directory
and renamed into place only once every file and `manifest.json` are written and fsynced, so a job
killed at any point leaves nothing at the final path: an artefact that exists is complete.

`manifest.json` holds: key, step, params, upstream keys, raw-input identity, fingerprint parts,
library versions, git commit (if any), host, device, start/end time, wall seconds, peak memory,
extra fields the step records, and sha256 + size of every file.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

MANIFEST = "manifest.json"
# Steps import this module first thing, so this is (close to) the job's start: wall_s covers the job.
PROCESS_START = time.time()
# Written by Snakemake into directory outputs; not part of the artefact.
IGNORED_FILES = {".snakemake_timestamp"}
TRACKED_LIBRARIES = ("saeflow", "torch", "transformer-lens", "sae-lens", "eai-sparsify", "snakemake",
                     "numpy", "safetensors", "tokenizers", "transformers", "scikit-learn")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, obj, indent: int = 2) -> None:
    """Write JSON via temp file + fsync + rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=True, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def library_versions() -> dict:
    out = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        return res.stdout.strip() if res.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def file_hashes(root: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} of every file under root, manifest excluded."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and rel != MANIFEST and p.name not in IGNORED_FILES:
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


class Artefact:
    """Handle given to a step while it writes: `art.dir` is the temporary directory to fill."""

    def __init__(self, final: Path, node: dict):
        self.final = Path(final)
        self.node = node
        self.dir = self.final.parent / f".tmp-{self.final.name}-{uuid.uuid4().hex[:8]}"
        self.extra: dict = {}

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def record(self, **fields) -> None:
        """Add fields (JSON-serialisable) to the manifest, e.g. quality gates or device."""
        self.extra.update(fields)


@contextmanager
def write_artefact(final: Path | str, node: dict, device: str = "cpu"):
    """Context manager: yields an `Artefact`; on success publishes it atomically at `final`.

    `node` is the plan's description of the node (key, step, params, upstream, inputs, fingerprint).
    On an exception the temporary directory is removed and nothing appears at `final`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    art = Artefact(final, node)
    art.dir.mkdir(parents=True)
    start = PROCESS_START
    try:
        yield art
        files = file_hashes(art.dir)
        end = time.time()
        manifest = {
            "key": node["key"], "step": node["step"], "params": node["params"],
            "upstream": node.get("upstream", {}), "inputs": node.get("inputs", {}),
            "labels": node.get("labels", {}), "fingerprint": node.get("fingerprint", {}),
            "versions": library_versions(), "git_commit": git_commit(Path(__file__).parent),
            "host": socket.gethostname(), "device": device,
            "start": datetime.fromtimestamp(start, timezone.utc).isoformat(),
            "end": datetime.fromtimestamp(end, timezone.utc).isoformat(),
            "wall_s": round(end - start, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "files": files, **art.extra,
        }
        write_json_atomic(art.dir / MANIFEST, manifest)
        _fsync_tree(art.dir)
        if final.exists():
            # Snakemake may pre-create (or leave) an empty directory output; an existing complete
            # artefact is never overwritten because the same key means the same content.
            if any(p.name not in IGNORED_FILES for p in final.iterdir()):
                raise FileExistsError(f"{final} exists and is not empty; refusing to overwrite")
            shutil.rmtree(final)
        os.rename(art.dir, final)
    except BaseException:
        shutil.rmtree(art.dir, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for p in Path(root).rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def read_json(path: Path | str):
    return json.loads(Path(path).read_text())


def read_manifest(artefact_dir: Path | str) -> dict:
    path = Path(artefact_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{artefact_dir} has no {MANIFEST}: not a complete artefact")
    return json.loads(path.read_text())


def verify_artefact(artefact_dir: Path | str) -> list[str]:
    """Problems found (empty list: the artefact is intact): missing, extra or altered files."""
    artefact_dir = Path(artefact_dir)
    try:
        manifest = read_manifest(artefact_dir)
    except (FileNotFoundError, json.JSONDecodeError) as e:
        return [str(e)]
    problems = []
    if manifest.get("key") != artefact_dir.name:
        problems.append(f"manifest key {manifest.get('key')} != directory name {artefact_dir.name}")
    expected = manifest.get("files", {})
    actual = file_hashes(artefact_dir)
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            problems.append(f"missing file {rel}")
        elif rel not in expected:
            problems.append(f"unexpected file {rel}")
        elif actual[rel]["sha256"] != expected[rel]["sha256"]:
            problems.append(f"sha256 mismatch for {rel}")
    return problems


def iter_artefacts(store: Path | str):
    """Yield every artefact directory (`<store>/<step>/<key>`), temporary directories excluded."""
    store = Path(store)
    if not store.is_dir():
        return
    for step_dir in sorted(p for p in store.iterdir() if p.is_dir()):
        for d in sorted(step_dir.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                yield d


def verify_store(store: Path | str, remove: bool = False) -> dict[str, list[str]]:
    """{artefact path: problems} for every corrupt artefact; with remove=True, deletes them."""
    bad = {}
    for d in iter_artefacts(store):
        problems = verify_artefact(d)
        if problems:
            bad[str(d)] = problems
            if remove:
                shutil.rmtree(d)
    return bad

