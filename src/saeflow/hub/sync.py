"""Sync `data/` with a Hugging Face dataset repo (or a plain directory): push what the remote lacks, pull
store artefacts atomically and verified.

Remote layout: local `data/README.md` (the dataset card) is the repo's `README.md`; every other file
`data/<rel>` is `data/<rel>` in the repo, except `data/logs/`, `data/benchmarks/` and hidden or temporary
entries (any path component starting with `.`: `.tmp-*` directories of running jobs, `.snakemake*`,
atomic-write temporaries). Other files at the repo root (`.gitattributes`) are never touched.

Push (`plan_push`, `push`): hash every local file (sha256, and the git blob sha1 of its bytes), list
the remote once, and upload only files that are missing or different there: LFS files compare by
sha256, regular files by git blob sha1. Store artefacts are checked against their own manifest first;
a corrupt or incomplete local artefact is not pushed (and, with prune, its remote copy is kept).
Uploads go in batches, one commit each, and an artefact's `manifest.json` is committed after (or with)
its other files, so a remote artefact that has a manifest has all its files even if a push stops
half-way; rerunning the push uploads only the rest. Remote files are deleted only with `prune`, and only
under `data/`.

Pull (`pull`): for every remote artefact `data/store/<step>/<key>/` (all, or those in `keys`) that is not
complete locally: download its manifest first, check that it describes its key (the key recomputed from
the manifest's step, params, upstream keys, inputs and code digest), then download exactly the files it
lists into `<store>/<step>/.tmp-<key>-sync<hex>/` next to the final directory, check each one's size and
sha256 against the manifest, and only then rename the directory into place. On any mismatch or error
the temporary directory is removed and the artefact is reported as rejected: nothing half-written
remains, and a killed pull leaves only a `.tmp-*` directory that `saeflow verify --remove` clears.
Remote files an artefact's manifest does not list are never downloaded. Nothing is ever unpickled:
files are moved as bytes and hashed, and artefacts listing pickle-format files (`.pkl`, `.pt`, ...,
which no step writes) are rejected. With `published=True` the published tree is pulled too, one file at
a time (temporary file + rename, size and hash checked against the remote listing).

`Remote` implementations: `LocalDirRemote(path)` (a directory laid out like the repo) and
`HubRemote(repo_id, token=None, revision="main")` on the real `huggingface_hub.HfApi`, imported lazily
so that the `saeflow` command line starts fast. The token is never printed, logged or put in a repr.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from saeflow.hub.remotes import Rejected, Remote, RemoteFile, hash_file, safe_relpath
from saeflow.workflow import keys as keys_mod
from saeflow.workflow import store

EXCLUDED_TOP = ("logs", "benchmarks")


STORE_DIR = "store"


CARD = "README.md"


# Formats that can execute code when loaded; no step writes them, so a pulled artefact listing one is rejected.
PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib", ".dill", ".sav")


_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.=+-]*")


_KEY = re.compile(r"[0-9a-f]{8,64}")


DEFAULT_BATCH_FILES = 50


DEFAULT_BATCH_BYTES = 2 << 30


@dataclass
class LocalFile:
    path: Path
    size: int
    sha256: str
    git_sha1: str


def remote_path(rel: str) -> str:
    """Remote path of `data/<rel>`."""
    return CARD if rel == CARD else f"data/{rel}"


def local_rel(remote: str) -> str | None:
    """`<rel>` such that `data/<rel>` is the local file of a remote path, or None if the path is not synced."""
    if remote == CARD:
        return CARD
    if not remote.startswith("data/"):
        return None
    rel = remote[len("data/"):]
    return None if rel == CARD or excluded(rel) else rel


def excluded(rel: str) -> bool:
    """Whether `data/<rel>` stays local: logs, benchmarks, hidden and temporary entries."""
    parts = rel.split("/")
    return parts[0] in EXCLUDED_TOP or any(p.startswith(".") for p in parts)



def _artefact_of(rel: str) -> tuple[str, str, str] | None:
    """(step, key, file) if `data/<rel>` is a file of a store artefact."""
    parts = rel.split("/")
    if len(parts) >= 4 and parts[0] == STORE_DIR:
        return parts[1], parts[2], "/".join(parts[3:])
    return None


def scan_local(data_dir: Path | str) -> tuple[dict[str, LocalFile], dict[str, str]]:
    """({remote path: LocalFile}, {artefact dir: why skipped}) of everything under data_dir to push.
    Store artefacts are checked against their manifest; incomplete or corrupt ones are skipped whole."""
    data_dir = Path(data_dir)
    files: dict[str, LocalFile] = {}
    by_artefact: dict[tuple[str, str], dict[str, LocalFile]] = {}
    seen_dirs: set[str] = set()
    for root, dirs, names in os.walk(data_dir, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:  # a symlink loop
            dirs[:] = []
            continue
        seen_dirs.add(real)
        rel_root = Path(root).relative_to(data_dir).as_posix()
        rel_root = "" if rel_root == "." else rel_root + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(rel_root + d))
        for name in sorted(names):
            rel = rel_root + name
            p = Path(root) / name
            if excluded(rel) or not p.is_file():
                continue
            size, sha, sha1 = hash_file(p)
            lf = LocalFile(p, size, sha, sha1)
            art = _artefact_of(rel)
            if art is not None:
                by_artefact.setdefault(art[:2], {})[art[2]] = lf
            files[remote_path(rel)] = lf
    skipped: dict[str, str] = {}
    for (step, key), members in by_artefact.items():
        reason = _local_artefact_problem(data_dir / STORE_DIR / step / key, members)
        if reason:
            skipped[f"{STORE_DIR}/{step}/{key}"] = reason
            for rel in members:
                files.pop(remote_path(f"{STORE_DIR}/{step}/{key}/{rel}"), None)
    return files, skipped


def _local_artefact_problem(art_dir: Path, members: dict[str, LocalFile]) -> str | None:
    if store.MANIFEST not in members:
        return "no manifest.json (incomplete artefact)"
    try:
        manifest = json.loads(members[store.MANIFEST].path.read_text())
        expected = manifest["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest: {e}"
    if manifest.get("key") != art_dir.name:
        return f"manifest key {manifest.get('key')!r} != directory name"
    if not isinstance(expected, dict) or not all(isinstance(v, dict) for v in expected.values()):
        return "unreadable manifest: bad 'files'"
    actual = {rel: lf for rel, lf in members.items() if rel != store.MANIFEST}
    for rel in sorted(set(expected) | set(actual)):
        if rel not in actual:
            return f"missing file {rel}"
        if rel not in expected:
            return f"unexpected file {rel}"
        if actual[rel].sha256 != expected[rel].get("sha256"):
            return f"sha256 mismatch for {rel}"
    return None


def same_content(local: LocalFile, remote: RemoteFile) -> bool:
    if local.size != remote.size:
        return False
    if remote.sha256 is not None:
        return remote.sha256 == local.sha256
    if remote.git_sha1 is not None:
        return remote.git_sha1 == local.git_sha1
    return False


def _upload_order(paths: Iterable[str]) -> list[str]:
    """The store first (the source of truth), artefact by artefact with each manifest after the artefact's
    other files; then the published tree; the dataset card at the very end."""
    def sort_key(p: str):
        rel = local_rel(p) or ""
        art = _artefact_of(rel)
        if p == CARD:
            return (2, "", 0, "")
        if art is not None:
            return (0, f"{art[0]}/{art[1]}", 1 if art[2] == store.MANIFEST else 0, art[2])
        return (1, p, 0, "")
    return sorted(paths, key=sort_key)


def _protected(path: str, skipped: dict[str, str]) -> bool:
    rel = local_rel(path)
    return rel is not None and any(rel.startswith(d + "/") for d in skipped)


def plan_push(data_dir: Path | str, remote: Remote, prune: bool = False, *, _scan: tuple | None = None) -> dict:
    """{"upload": [remote paths, in upload order], "delete": [...], "unchanged": n, "skipped": {artefact: why}}."""
    local, skipped = _scan if _scan is not None else scan_local(data_dir)
    listing = remote.list_files()
    upload = [p for p, lf in local.items() if p not in listing or not same_content(lf, listing[p])]
    delete = []
    if prune:
        delete = sorted(p for p in listing if p not in local and p.startswith("data/") and local_rel(p) is not None
                        and not _protected(p, skipped))
    return {"upload": _upload_order(upload), "delete": delete, "unchanged": len(local) - len(upload),
            "skipped": skipped}


def _batches(paths: list[str], local: dict[str, LocalFile], max_files: int, max_bytes: int) -> list[list[str]]:
    out, cur, size = [], [], 0
    for p in paths:
        n = local[p].size
        if cur and (len(cur) >= max_files or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += n
    if cur:
        out.append(cur)
    return out


def push(data_dir: Path | str, remote: Remote, prune: bool = False, dry_run: bool = False,
         batch_size: int = DEFAULT_BATCH_FILES, max_batch_bytes: int = DEFAULT_BATCH_BYTES,
         progress: Callable[[str], None] | None = None) -> dict:
    """Upload what the remote lacks or has different (one commit per batch); with prune, delete remote
    files under data/ that have no local counterpart. dry_run: plan only, touch nothing.
    Returns the plan plus "commits" (the number made) and "uploaded"/"deleted" counts."""
    say = progress or (lambda msg: None)
    scan = scan_local(data_dir)
    local = scan[0]
    plan = plan_push(data_dir, remote, prune, _scan=scan)
    plan.update(commits=0, uploaded=0, deleted=0, dry_run=dry_run)
    if dry_run or not (plan["upload"] or plan["delete"]):
        return plan
    remote.prepare()
    files = [p for p in plan["upload"] if p != CARD]
    batches = _batches(files, local, max(1, batch_size), max_batch_bytes)
    if len(files) < len(plan["upload"]):
        batches.append([CARD])  # the card alone, last: the Hub validates its YAML header
    for i, batch in enumerate(batches, 1):
        remote.upload([(p, local[p].path) for p in batch], f"saeflow sync push: batch {i}/{len(batches)} "
                                                          f"({len(batch)} files)")
        plan["commits"] += 1
        plan["uploaded"] += len(batch)
        say(f"committed batch {i}/{len(batches)}: {len(batch)} files ({plan['uploaded']}/{len(plan['upload'])})")
    for i in range(0, len(plan["delete"]), max(1, batch_size) * 10):
        chunk = plan["delete"][i:i + max(1, batch_size) * 10]
        remote.delete(chunk, f"saeflow sync push --prune: delete {len(chunk)} files")
        plan["commits"] += 1
        plan["deleted"] += len(chunk)
        say(f"deleted {len(chunk)} remote files")
    return plan


@dataclass
class PullReport:
    pulled: list[str] = field(default_factory=list)          # artefact dirs installed (store/<step>/<key>)
    present: list[str] = field(default_factory=list)         # already complete locally
    rejected: dict[str, str] = field(default_factory=dict)   # artefact dir or published file -> why
    incomplete_remote: list[str] = field(default_factory=list)  # remote artefacts without a manifest
    missing: list[str] = field(default_factory=list)         # requested keys the remote does not have
    ignored: dict[str, str] = field(default_factory=dict)    # remote files not downloaded -> why
    published: list[str] = field(default_factory=list)       # published files installed
    published_present: list[str] = field(default_factory=list)
    kept_local: list[str] = field(default_factory=list)      # published files that differ locally (not overwritten)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _group_remote(listing: dict[str, RemoteFile]):
    """({(step, key): {file: RemoteFile}}, {published rel: RemoteFile}, {remote path: why ignored})."""
    arts: dict[tuple[str, str], dict[str, RemoteFile]] = {}
    published: dict[str, RemoteFile] = {}
    ignored: dict[str, str] = {}
    for path, rf in listing.items():
        rel = local_rel(path)
        if rel is None:
            continue  # not synced (e.g. .gitattributes)
        try:
            safe_relpath(rel)
        except Rejected as e:
            ignored[path] = str(e)
            continue
        art = _artefact_of(rel)
        if art is not None:
            step, key, name = art
            if not _NAME.fullmatch(step) or not _KEY.fullmatch(key):
                ignored[path] = "not a store artefact path"
                continue
            arts.setdefault((step, key), {})[name] = rf
        elif rel.split("/")[0] == STORE_DIR:
            ignored[path] = "not inside a store artefact"
        else:
            published[rel] = rf
    return arts, published, ignored


def _is_pickle_name(name: str) -> bool:
    return name.lower().endswith(PICKLE_SUFFIXES)


def _check_manifest(manifest, step: str, key: str) -> dict[str, dict]:
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise Rejected("manifest.json is not a manifest")
    if manifest.get("key") != key or manifest.get("step") != step:
        raise Rejected(f"manifest describes {manifest.get('step')}/{manifest.get('key')}, not {step}/{key}")
    try:
        recomputed = keys_mod.node_key(manifest["step"], manifest["params"], manifest["upstream"],
                                       manifest.get("inputs", {}), manifest["fingerprint"]["digest"])
    except (KeyError, TypeError, ValueError) as e:
        raise Rejected(f"manifest lacks what its key is computed from ({e})")
    if recomputed != key:
        raise Rejected(f"manifest does not hash to its key ({recomputed} != {key})")
    files = {}
    for rel, meta in manifest["files"].items():
        safe_relpath(rel)
        if rel == store.MANIFEST or not isinstance(meta, dict):
            raise Rejected(f"bad manifest entry {rel!r}")
        sha, size = meta.get("sha256"), meta.get("bytes", meta.get("size"))
        if not (isinstance(sha, str) and re.fullmatch(r"[0-9a-f]{64}", sha)) or not isinstance(size, int):
            raise Rejected(f"manifest entry {rel!r} has no sha256 / size")
        if _is_pickle_name(rel):
            raise Rejected(f"lists a pickle-format file ({rel}); saeflow never stores pickles")
        files[rel] = {"sha256": sha, "bytes": size}
    return files


def _check_download(path: Path, size: int, sha256: str | None = None, git_sha1: str | None = None) -> None:
    got_size, got_sha, got_sha1 = hash_file(path, git=git_sha1 is not None)
    if got_size != size:
        raise Rejected(f"{path.name}: size {got_size} != {size}")
    if sha256 is not None and got_sha != sha256:
        raise Rejected(f"{path.name}: sha256 mismatch")
    if git_sha1 is not None and got_sha1 != git_sha1:
        raise Rejected(f"{path.name}: git blob sha1 mismatch")


def _pull_artefact(remote: Remote, store_dir: Path, step: str, key: str, members: dict[str, RemoteFile],
                   report: PullReport) -> None:
    final = store_dir / step / key
    name = f"{STORE_DIR}/{step}/{key}"
    base = f"data/{name}"
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".tmp-{key}-sync{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        remote.download(f"{base}/{store.MANIFEST}", tmp / store.MANIFEST)
        _check_download(tmp / store.MANIFEST, members[store.MANIFEST].size, members[store.MANIFEST].sha256,
                        members[store.MANIFEST].git_sha1)
        try:
            manifest = json.loads((tmp / store.MANIFEST).read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise Rejected(f"manifest.json is not JSON: {e}")
        files = _check_manifest(manifest, step, key)
        for rel, meta in files.items():  # everything is checked against the listing before any download
            rf = members.get(rel)
            if rf is None:
                raise Rejected(f"file {rel} listed in the manifest is missing on the remote")
            if rf.size != meta["bytes"]:
                raise Rejected(f"remote {rel}: size {rf.size} != {meta['bytes']} in the manifest")
            if rf.sha256 is not None and rf.sha256 != meta["sha256"]:
                raise Rejected(f"remote {rel}: sha256 differs from the manifest")
        for rel in sorted(set(members) - set(files) - {store.MANIFEST}):
            report.ignored[f"{base}/{rel}"] = "not listed in the artefact's manifest (not downloaded)"
        for rel, meta in sorted(files.items()):
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            remote.download(f"{base}/{rel}", dest)
            _check_download(dest, meta["bytes"], meta["sha256"])
        got = store.file_hashes(tmp)
        if {r: (v["sha256"], v["bytes"]) for r, v in got.items()} != \
                {r: (v["sha256"], v["bytes"]) for r, v in files.items()}:
            raise Rejected("downloaded files do not match the manifest")
        store._fsync_tree(tmp)
        if final.exists():
            if any(p.name not in store.IGNORED_FILES for p in final.iterdir()):
                raise Rejected(f"{final} exists and is not a complete artefact; run `saeflow verify --remove`")
            shutil.rmtree(final)
        os.rename(tmp, final)
        report.pulled.append(name)
    except Rejected as e:
        shutil.rmtree(tmp, ignore_errors=True)
        report.rejected[name] = str(e)
    except Exception as e:  # network or disk error: nothing is installed, the pull goes on
        shutil.rmtree(tmp, ignore_errors=True)
        report.rejected[name] = f"{type(e).__name__}: {e}"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _pull_published_file(remote: Remote, data_dir: Path, rel: str, rf: RemoteFile, overwrite: bool,
                         report: PullReport) -> None:
    dest = data_dir / rel
    if _is_pickle_name(rel):
        report.rejected[rel] = "pickle-format file; saeflow never publishes pickles"
        return
    if dest.is_file():
        size, sha, sha1 = hash_file(dest)
        if same_content(LocalFile(dest, size, sha, sha1), rf):
            report.published_present.append(rel)
            return
        if not overwrite:
            report.kept_local.append(rel)
            return
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".tmp-{dest.name}-sync{uuid.uuid4().hex[:8]}"
    try:
        remote.download(remote_path(rel), tmp)
        _check_download(tmp, rf.size, rf.sha256, rf.git_sha1)
        os.replace(tmp, dest)
        report.published.append(rel)
    except Exception as e:
        report.rejected[rel] = str(e) if isinstance(e, Rejected) else f"{type(e).__name__}: {e}"
    finally:
        tmp.unlink(missing_ok=True)


def pull(data_dir: Path | str, remote: Remote, keys: Iterable[str] | None = None, published: bool = False,
         overwrite_published: bool = False, progress: Callable[[str], None] | None = None) -> PullReport:
    """Install remote store artefacts (all, or those whose key is in `keys`) that are not complete locally,
    each verified against its manifest and renamed into place atomically; with published=True, also the
    published tree (files that differ locally are kept unless overwrite_published)."""
    say = progress or (lambda msg: None)
    data_dir = Path(data_dir)
    store_dir = data_dir / STORE_DIR
    listing = remote.list_files()
    if not remote.exists():
        # Pulling from nothing is an error, not "pulled 0 artefacts": a misspelt repo, a private one without
        # a token, or a missing directory.
        raise FileNotFoundError(f"{remote.describe()} does not exist or is not readable with these credentials "
                                "(a private repo needs HF_TOKEN or `hf auth login`)")
    arts, pub, ignored = _group_remote(listing)
    report = PullReport(ignored=ignored)
    wanted = None if keys is None else set(keys)
    if wanted is not None:
        remote_keys = {k for _, k in arts}
        report.missing = sorted(k for k in wanted - remote_keys if not any(store_dir.glob(f"*/{k}/{store.MANIFEST}")))
    for (step, key), members in sorted(arts.items()):
        if wanted is not None and key not in wanted:
            continue
        name = f"{STORE_DIR}/{step}/{key}"
        if (store_dir / step / key / store.MANIFEST).is_file():
            report.present.append(name)
            continue
        if store.MANIFEST not in members:
            report.incomplete_remote.append(name)
            continue
        _pull_artefact(remote, store_dir, step, key, members, report)
        say(f"{'pulled' if name in report.pulled else 'rejected'} {name}")
    if published:
        for rel, rf in sorted(pub.items()):
            _pull_published_file(remote, data_dir, rel, rf, overwrite_published, report)
    return report
