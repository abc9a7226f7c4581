"""The content-addressed store: atomic artefact directories with a manifest.

An artefact is the directory `<store>/<step>/<key>/`. It is written in a sibling temporary directory
and renamed into place only once every file and `manifest.json` are written and fsynced, so a job
killed at any point leaves nothing at the final path: an artefact is complete iff its manifest exists.

`manifest.json` holds: key, step, params, upstream keys, raw-input identity, fingerprint parts,
library versions, git commit (if any), host, device, start/end time, wall seconds, peak memory,
extra fields the step records, and sha256 + size of every file.

A store may be shared by several checkouts or machines. Writing an artefact holds the exclusive lock
`<store>/.locks/<step>-<key>` (`key_lock`), so two runs never compute one key at once, and a run that
finds the key complete once it holds the lock uses it; a rename onto a complete artefact keeps the one
there (the same key is the same computation). `verify_store` never removes a temporary directory whose
lock is held (a live job). Files get the modes the umask allows (`0666 & ~umask`), whatever the
library that wrote them chose.
"""

from __future__ import annotations

import errno
import fcntl
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
        self.outcome: str | None = None  # "installed", or "existing" when another run finished the key first

    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def record(self, **fields) -> None:
        """Add fields (JSON-serialisable) to the manifest, e.g. quality gates or device."""
        self.extra.update(fields)


class CorruptInput(RuntimeError):
    """An input artefact does not match its manifest (or has none): the job must not read it."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Files 0666 & ~umask, directories 0777 & ~umask (some writers, e.g. safetensors, create files 0600)."""
    mask = _umask()
    for p in [root, *Path(root).rglob("*")]:
        os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def lock_path(final: Path | str) -> Path:
    """`<store>/.locks/<step>-<key>`: beside the step folders, so a step folder holds artefacts only."""
    final = Path(final)
    return final.parent.parent / ".locks" / f"{final.parent.name}-{final.name}"


@contextmanager
def key_lock(final: Path | str, blocking: bool = True):
    """Exclusive advisory lock on one key of the store (flock on `lock_path(final)`), held while the body
    runs; yields False when `blocking=False` and another process holds it. A killed holder releases it."""
    path = lock_path(final)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


def is_complete(final: Path | str) -> bool:
    """An artefact is complete iff its manifest exists (it is the last file renamed into place)."""
    return (Path(final) / MANIFEST).is_file()


def install(tmp: Path, final: Path) -> str:
    """Rename a finished temporary directory into place; returns "installed" or "existing".

    rename(2) replaces an empty directory atomically. If `final` already holds a complete artefact that
    verifies (another run finished the same key), it is kept and `tmp` discarded; if it holds a broken
    one (no manifest, or files that do not match it), that is moved aside and replaced.
    """
    try:
        os.rename(tmp, final)
        return "installed"
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    if is_complete(final) and not verify_artefact(final):
        shutil.rmtree(tmp, ignore_errors=True)
        return "existing"
    trash = final.parent / f".trash-{final.name}-{uuid.uuid4().hex[:8]}"
    os.rename(final, trash)
    os.rename(tmp, final)
    shutil.rmtree(trash, ignore_errors=True)
    return "installed"


@contextmanager
def write_artefact(final: Path | str, node: dict, device: str = "cpu"):
    """Context manager: yields an `Artefact`; on success publishes it atomically at `final` (see `install`).

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
        _apply_umask(art.dir)
        _fsync_tree(art.dir)
        # Snakemake may leave its own marker in a pre-created output directory; it is not part of the artefact.
        for name in IGNORED_FILES:
            if (final / name).is_file() and len(list(final.iterdir())) == 1:
                (final / name).unlink()
        art.outcome = install(art.dir, final)
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


def _is_empty(d: Path) -> bool:
    """A directory with nothing of an artefact in it: what Snakemake leaves when it prepared a job's output
    directory and the job failed or was killed before installing its artefact."""
    return all(p.name in IGNORED_FILES for p in d.iterdir())


def iter_artefacts(store: Path | str):
    """Yield every artefact directory (`<store>/<step>/<key>`); temporary, lock and empty directories excluded."""
    store = Path(store)
    if not store.is_dir():
        return
    for step_dir in sorted(p for p in store.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for d in sorted(step_dir.iterdir()):
            if d.is_dir() and not d.name.startswith(".") and not _is_empty(d):
                yield d


def empty_dirs(store: Path | str) -> list[Path]:
    """Empty key directories (see `_is_empty`): harmless, removed by `repair`."""
    store = Path(store)
    if not store.is_dir():
        return []
    return [d for step in sorted(store.iterdir()) if step.is_dir() and not step.name.startswith(".")
            for d in sorted(step.iterdir()) if d.is_dir() and not d.name.startswith(".") and _is_empty(d)]


def copy_file(src: Path | str, dst: Path | str) -> None:
    """Copy src to dst atomically (temp file + rename), as a reflink where the filesystem supports one
    (copy-on-write: shares blocks, but writing either file never changes the other), else a plain copy.
    Mode 0666 & ~umask. Never a hard link: editing the copy must never change the source."""
    src, dst = Path(src), Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(src, "rb") as fi, open(tmp, "wb") as fo:
            try:
                fcntl.ioctl(fo.fileno(), 0x40049409, fi.fileno())  # FICLONE (btrfs, xfs, ...)
            except OSError:
                shutil.copyfileobj(fi, fo, 1 << 20)
            fo.flush()
            os.fsync(fo.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_file(artefact_dir: Path | str, rel: str, dest: Path | str) -> None:
    """Copy file `rel` of a complete artefact to `dest`, after checking its sha256 against the manifest."""
    artefact_dir = Path(artefact_dir)
    m = read_manifest(artefact_dir)
    info = m.get("files", {}).get(rel)
    if info is None:
        raise CorruptInput(f"{artefact_dir} has no file {rel} in its manifest")
    if sha256_file(artefact_dir / rel) != info["sha256"]:
        raise CorruptInput(f"{artefact_dir / rel} does not match its manifest (sha256); run `saeflow verify --remove`, "
                           "then rerun")
    copy_file(artefact_dir / rel, dest)


def verify_inputs(inputs: dict[str, Path], expected_keys: dict[str, str]) -> dict[str, int]:
    """Check every input artefact before a job reads any of it; returns {role: files checked}.

    An input must have its manifest, naming the key the plan expects, and every file the manifest lists with
    its size and sha256 (each file hashed once per job). Anything else raises CorruptInput naming the file
    and the repair: `saeflow verify --remove`, then rerun (which rebuilds it and what depends on it).
    """
    fix = "run `saeflow verify --remove`, then rerun snakemake (it rebuilds the artefact and its dependents)"
    checked = {}
    manifests = {}
    for role, path in inputs.items():
        path = Path(path)
        try:
            manifests[role] = m = read_manifest(path)
        except (FileNotFoundError, json.JSONDecodeError) as e:
            raise CorruptInput(f"input {role} of this job is not a complete artefact ({e}); {fix}") from None
        want = expected_keys.get(role, path.name)
        if m.get("key") != want or path.name != want:
            raise CorruptInput(f"input {role} at {path} holds key {m.get('key')}, expected {want}; {fix}")
        for rel, info in m.get("files", {}).items():
            f = path / rel
            if not f.is_file() or f.stat().st_size != info["bytes"]:
                raise CorruptInput(f"{f} is missing or has the wrong size for its manifest; {fix}")
    for role, m in manifests.items():
        for rel, info in m.get("files", {}).items():
            if sha256_file(Path(inputs[role]) / rel) != info["sha256"]:
                raise CorruptInput(f"{Path(inputs[role]) / rel} does not match its manifest (sha256); {fix}")
        checked[role] = len(m.get("files", {}))
    return checked


def temp_dirs(store: Path | str) -> list[tuple[Path, bool]]:
    """Temporary directories of jobs (`<step>/.tmp-<key>-*`, `.trash-*`) and whether a live job holds them."""
    out = []
    for d in sorted(Path(store).glob("*/.tmp-*")) + sorted(Path(store).glob("*/.trash-*")):
        key = d.name.split("-")[1]
        with key_lock(d.parent / key, blocking=False) as free:
            out.append((d, not free))
    return out


def dependents(store: Path | str, keys: set[str]) -> dict[str, set[str]]:
    """{artefact dir: the given keys it depends on, directly or through other artefacts} over the store's
    manifests (their `upstream` keys), for every artefact downstream of `keys`."""
    ups, where = {}, {}
    for d in iter_artefacts(store):
        try:
            m = read_manifest(d)
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        ups[d.name] = set(m.get("upstream", {}).values())
        where[d.name] = d
    down: dict[str, set[str]] = {}
    for k, up in ups.items():
        for u in up:
            down.setdefault(u, set()).add(k)
    roots: dict[str, set[str]] = {}
    for root in keys:
        todo, seen = [root], set()
        while todo:
            for k in down.get(todo.pop(), ()):
                if k not in seen and k not in keys:
                    seen.add(k)
                    todo.append(k)
                    roots.setdefault(k, set()).add(root)
    return {str(where[k]): v for k, v in roots.items()}


def verify_store(store: Path | str, remove: bool = False) -> dict[str, list[str]]:
    """{artefact path: problems} for every corrupt artefact; with remove=True, deletes them and every artefact
    that depends on them (see `repair`), and the temporary directories of jobs no longer alive."""
    bad = {}
    for d in iter_artefacts(store):
        problems = verify_artefact(d)
        if problems:
            bad[str(d)] = problems
    if remove:
        repair(store, bad)
    return bad


def repair(store: Path | str, bad: dict[str, list[str]]) -> dict:
    """Remove the corrupt artefacts, their dependents and dead jobs' temporary directories; returns
    {"removed": [...], "dependents": {path: [keys]}, "temp_removed": [...], "temp_live": [...],
    "removed_sha256": sha256 of every file the removed artefacts held (to find exports made from them)}.

    Dependents go too: their numbers came from bytes now known to be bad at some point, so the next run
    rebuilds exactly the removed artefacts and everything downstream of them (Snakefile: `all` lists every
    artefact, so a missing one is rebuilt even when its consumers are present). A temporary directory whose
    key lock is held belongs to a live job and is never touched."""
    keys = {Path(p).name for p in bad}
    deps = dependents(store, keys)
    removed, removed_sha256 = [], set()
    for path in [*bad, *deps]:
        with key_lock(Path(path), blocking=False) as free:
            if free:
                try:
                    removed_sha256 |= {f["sha256"] for f in read_manifest(path).get("files", {}).values()}
                except (FileNotFoundError, json.JSONDecodeError, AttributeError):
                    pass
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    for d in empty_dirs(store):
        with key_lock(d, blocking=False) as free:
            if free:
                shutil.rmtree(d, ignore_errors=True)
    temp_removed, temp_live = [], []
    for d, live in temp_dirs(store):
        if live:
            temp_live.append(str(d))
        else:
            shutil.rmtree(d, ignore_errors=True)
            temp_removed.append(str(d))
    return {"removed": removed, "dependents": {p: sorted(v) for p, v in deps.items()},
            "temp_removed": temp_removed, "temp_live": temp_live, "removed_sha256": removed_sha256}
