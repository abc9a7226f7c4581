"""Where data/ is synced to: a Hugging Face dataset repo through the real ``huggingface_hub`` client
(``HubRemote``) or a plain directory (``LocalDirRemote``), behind one small ``Remote`` protocol.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol


def safe_relpath(rel: str) -> str:
    p = PurePosixPath(rel)
    if (not rel or rel.startswith("/") or "\\" in rel or "\0" in rel or p.as_posix() != rel
            or any(part in ("", ".", "..") for part in rel.split("/"))):
        raise Rejected(f"unsafe path {rel!r}")
    return rel


class SyncError(RuntimeError):
    """A push or pull could not proceed (the message never contains a token)."""


class Rejected(Exception):
    """An artefact or file from the remote failed a check; it is not installed."""


@dataclass(frozen=True)
class RemoteFile:
    """A file on the remote: size, and whichever content hashes the remote reports."""

    path: str
    size: int
    sha256: str | None = None      # LFS files on the Hub; every file of a LocalDirRemote
    git_sha1: str | None = None    # regular (non-LFS) files on the Hub: git blob id of the content


class Remote(Protocol):
    def describe(self) -> str: ...                                         # safe to print (no token)
    def list_files(self) -> dict[str, RemoteFile]: ...                     # {} if the remote does not exist
    def exists(self) -> bool: ...                                          # after list_files: found and readable
    def prepare(self) -> None: ...                                         # create the remote if missing
    def upload(self, files: list[tuple[str, Path]], message: str) -> None: ...  # one commit
    def delete(self, paths: list[str], message: str) -> None: ...          # one commit
    def download(self, path: str, dest: Path) -> None: ...                 # write the file at dest


class LocalDirRemote:
    """A plain directory laid out like the dataset repo (`README.md`, `data/...`)."""

    def __init__(self, path: Path | str):
        self.root = Path(path)

    def __repr__(self) -> str:
        return f"LocalDirRemote({str(self.root)!r})"

    def describe(self) -> str:
        return f"directory {self.root}"

    def exists(self) -> bool:
        return self.root.is_dir()

    def list_files(self) -> dict[str, RemoteFile]:
        out = {}
        if not self.root.is_dir():
            return out
        for p in sorted(self.root.rglob("*")):
            rel = p.relative_to(self.root).as_posix()
            if p.is_file() and not any(part.startswith(".tmp-") for part in rel.split("/")):
                size, sha, _ = hash_file(p, git=False)
                out[rel] = RemoteFile(rel, size, sha256=sha)
        return out

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, rel: str) -> Path:
        return self.root / safe_relpath(rel)

    def upload(self, files: list[tuple[str, Path]], message: str) -> None:
        staged = []
        try:
            for rel, src in files:
                dest = self._path(rel)
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.parent / f".tmp-up-{uuid.uuid4().hex[:8]}-{dest.name}"
                shutil.copyfile(src, tmp)
                staged.append((tmp, dest))
            for tmp, dest in staged:
                os.replace(tmp, dest)
        finally:
            for tmp, _ in staged:
                tmp.unlink(missing_ok=True)

    def delete(self, paths: list[str], message: str) -> None:
        for rel in paths:
            p = self._path(rel)
            p.unlink(missing_ok=True)
            for parent in p.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    def download(self, path: str, dest: Path) -> None:
        shutil.copyfile(self._path(path), dest)


class HubRemote:
    """A Hugging Face repo through `huggingface_hub.HfApi`: a dataset repo (``repo_type="dataset"``, what `data/` is
    synced with) or a model repo (``"model"``: the trained dictionaries, saeflow.hub.dictionaries).

    token: None uses the huggingface_hub default (HF_TOKEN, or the stored login). endpoint: None uses
    HF_ENDPOINT / the public Hub. use_xet: None leaves the client's choice (Xet uploads when `hf_xet` is
    installed and HF_HUB_DISABLE_XET is unset); False forces the plain LFS upload protocol. A listing pins
    the commit it saw, and later downloads read that commit, so a pull sees one consistent snapshot.
    """

    def __init__(self, repo_id: str, token: str | None = None, revision: str = "main", endpoint: str | None = None,
                 use_xet: bool | None = None, private: bool | None = None, repo_type: str = "dataset"):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*", repo_id):
            raise ValueError(f"repo must be USER/NAME, got {repo_id!r}")
        if repo_type not in ("dataset", "model"):
            raise ValueError(f"repo_type must be dataset or model, got {repo_type!r}")
        self.repo_type = repo_type
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint
        self.use_xet, self.private = use_xet, private
        self.__token = token
        self.commit: str | None = None

    def __repr__(self) -> str:
        return f"HubRemote({self.repo_id!r}, revision={self.revision!r})"

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"Hugging Face {self.repo_type} {self.repo_id}@{self.revision}{where}"

    @contextmanager
    def _api(self):
        from huggingface_hub import HfApi, constants
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        saved_xet = constants.HF_HUB_DISABLE_XET
        bars_were_off = are_progress_bars_disabled()
        if self.use_xet is not None:
            constants.HF_HUB_DISABLE_XET = not self.use_xet
        disable_progress_bars()
        try:
            yield HfApi(endpoint=self.endpoint, token=self.__token)
        finally:
            constants.HF_HUB_DISABLE_XET = saved_xet
            if not bars_were_off:
                enable_progress_bars()

    def exists(self) -> bool:
        """Whether the last `list_files` found the repo at its revision (None commit: not found or no access)."""
        return self.commit is not None

    def list_files(self) -> dict[str, RemoteFile]:
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        with self._api() as api:
            try:
                info = api.repo_info(self.repo_id, repo_type=self.repo_type, revision=self.revision)
            except (RepositoryNotFoundError, RevisionNotFoundError):
                self.commit = None
                return {}
            self.commit = info.sha
            out = {}
            for item in api.list_repo_tree(self.repo_id, repo_type=self.repo_type, revision=info.sha, recursive=True):
                if not hasattr(item, "blob_id"):
                    continue  # a folder
                if item.lfs is not None:
                    out[item.path] = RemoteFile(item.path, item.size, sha256=item.lfs.sha256)
                else:
                    out[item.path] = RemoteFile(item.path, item.size, git_sha1=item.blob_id)
            return out

    def prepare(self) -> None:
        with self._api() as api:
            api.create_repo(self.repo_id, repo_type=self.repo_type, exist_ok=True, private=self.private)

    def upload(self, files: list[tuple[str, Path]], message: str) -> None:
        from huggingface_hub import CommitOperationAdd

        with self._api() as api:
            ops = [CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(src)) for rel, src in files]
            info = api.create_commit(self.repo_id, ops, commit_message=message, repo_type=self.repo_type,
                                     revision=self.revision)
            self.commit = info.oid

    def delete(self, paths: list[str], message: str) -> None:
        from huggingface_hub import CommitOperationDelete

        with self._api() as api:
            ops = [CommitOperationDelete(path_in_repo=p, is_folder=False) for p in paths]
            info = api.create_commit(self.repo_id, ops, commit_message=message, repo_type=self.repo_type,
                                     revision=self.revision)
            self.commit = info.oid

    def download(self, path: str, dest: Path) -> None:
        from huggingface_hub import hf_hub_download

        staging = dest.parent / f".tmp-dl-{uuid.uuid4().hex[:8]}"
        try:
            with self._api():
                got = hf_hub_download(self.repo_id, path, repo_type=self.repo_type,
                                      revision=self.commit or self.revision, local_dir=staging,
                                      cache_dir=staging / ".hf-cache", token=self.__token, endpoint=self.endpoint)
            os.replace(got, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def hash_file(path: Path, git: bool = True, chunk: int = 1 << 20) -> tuple[int, str, str | None]:
    """(size, sha256, git blob sha1 or None) of a file, in one read."""
    size = path.stat().st_size
    h256 = hashlib.sha256()
    h1 = hashlib.sha1(b"blob %d\0" % size) if git else None
    n = 0
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h256.update(block)
            if h1 is not None:
                h1.update(block)
            n += len(block)
    if n != size:
        raise SyncError(f"{path} changed while it was read")
    return size, h256.hexdigest(), (h1.hexdigest() if h1 is not None else None)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
