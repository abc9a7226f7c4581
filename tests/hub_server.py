"""A local stand-in for the Hugging Face Hub HTTP API, for testing `saeflow sync` with the real client.

Only the subset of the API that `huggingface_hub` (2.4.0) calls for `create_repo`, `repo_info`,
`create_commit` (preupload, LFS batch + basic PUT transfer + verify, NDJSON commit, README YAML
validation), `list_repo_tree` (recursive, cursor pagination through the `Link` header) and
`hf_hub_download` (HEAD/GET `/resolve/`, with `X-Repo-Commit`, `ETag`, `X-Linked-Etag`,
`X-Linked-Size`, `Content-Length`, `Range`) is implemented. The server never advertises Xet storage
(no `X-Xet-*` headers, no `xet-*-token` routes, LFS batch answers `transfer: basic`), so downloads take
the plain HTTP path; uploads take the LFS path when the client runs with `HF_HUB_DISABLE_XET=1` (the
2.4.0 client decides Xet vs LFS uploads on the client side only: `hf_xet` installed and not disabled).
Any request to a route it does not know is answered 404 and recorded in `unhandled` (tests assert it
stays empty, which also shows the client never tried Xet).

Repository contents live in memory: commits are full snapshots {path: Entry}; LFS objects are stored
once by sha256. Test hooks: `fail_after` (interrupt uploads or commits: an HTTP status, a dropped
connection, or a commit applied whose response is lost), `corrupt` (change stored bytes, keeping or
updating the listed hashes), `put_files` (plant files with a direct commit), `files`, `commits`.

    with HubServer(token="hf_x") as hub:   # endpoint: hub.endpoint, e.g. http://127.0.0.1:40123
        ...
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_THRESHOLD = 10 * 1024 * 1024
# The default .gitattributes of a new dataset repo on the Hub (the patterns that matter here).
GITATTRIBUTES_PATTERNS = [
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.lz4",
    "*.mds", "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tar", "*.tflite", "*.tgz",
    "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*", "*.mp3", "*.ogg", "*.wav", "*.bmp", "*.gif", "*.png",
    "*.tiff", "*.jpg", "*.jpeg", "*.webp",
]
GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in GITATTRIBUTES_PATTERNS).encode()
PREFIXES = {"dataset": "datasets/", "space": "spaces/", "model": ""}


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Entry:
    size: int
    oid: str                       # git blob sha1 (of the content, or of the LFS pointer)
    content: bytes | None = None   # regular files
    lfs_sha256: str | None = None  # LFS files: the object lives in HubServer.lfs

    @property
    def is_lfs(self) -> bool:
        return self.lfs_sha256 is not None


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    tree: dict[str, Entry]
    date: float = field(default_factory=time.time)


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> Commit | None:
        if rev in self.branches:
            return self.commits[self.branches[rev]]
        return self.commits.get(rev)


class _Failure:
    def __init__(self, after: int, on: str, mode: str, status: int, times: int | None):
        self.after, self.on, self.mode, self.status, self.times = after, on, mode, status, times
        self.seen = 0

    def should_fail(self, kind: str) -> bool:
        """Called once per request of `kind`; True if this one must fail."""
        if kind != self.on and self.on != "any":
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        if self.times is not None:
            if self.times <= 0:
                return False
            self.times -= 1
        return True


class _Drop(Exception):
    """Close the connection without an answer."""


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None,
                 body: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}
        self.body = body or {}


class HubServer:
    """In-memory Hub. `token`: if set, write routes require `Authorization: Bearer <token>`."""

    def __init__(self, token: str | None = None, page_size: int = 1000, lfs_threshold: int = LFS_THRESHOLD):
        self.token = token
        self.page_size = page_size
        self.lfs_threshold = lfs_threshold
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, bool]] = []   # (method, path, authenticated) - never the token
        self.unhandled: list[tuple[str, str]] = []
        self.failure: _Failure | None = None
        self.counts = {"upload": 0, "commit": 0}
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._n = 0

    # ---- lifecycle -------------------------------------------------------------------------------
    def start(self) -> str:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self.endpoint

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)
            self._httpd = None

    def __enter__(self) -> "HubServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- test hooks ------------------------------------------------------------------------------
    def fail_after(self, n: int, on: str = "commit", mode: str = "status", status: int = 500,
                   times: int | None = None) -> None:
        """After `n` successful requests of kind `on` ("upload": LFS PUT, "commit", "any"), fail the next
        `times` ones (None: all). mode "status": answer `status`; "drop": close the connection without an
        answer; "apply_then_drop" (commits): apply the commit, then close without an answer."""
        self.failure = _Failure(n, on, mode, status, times)

    def heal(self) -> None:
        self.failure = None

    def repo(self, repo_id: str, repo_type: str = "dataset") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def head(self, repo_id: str, repo_type: str = "dataset", rev: str = "main") -> Commit:
        return self.repo(repo_id, repo_type).resolve(rev)

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[Commit]:
        """Commits of `main`, oldest first."""
        repo = self.repo(repo_id, repo_type)
        out, oid = [], repo.branches.get("main")
        while oid:
            out.append(repo.commits[oid])
            oid = repo.commits[oid].parent
        return out[::-1]

    def files(self, repo_id: str, repo_type: str = "dataset", rev: str = "main") -> dict[str, bytes]:
        with self.lock:
            return {p: self._content(e) for p, e in self.head(repo_id, repo_type, rev).tree.items()}

    def put_files(self, repo_id: str, files: dict[str, bytes], repo_type: str = "dataset", lfs: bool | None = None,
                  message: str = "planted") -> str:
        """Commit files directly (as another writer of the repo would); returns the commit oid."""
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            tree = dict(repo.resolve("main").tree)
            for path, data in files.items():
                use_lfs = self._is_lfs(path, len(data), data[:512]) if lfs is None else lfs
                tree[path] = self._entry(data, use_lfs)
            return self._commit(repo, "main", tree, message)

    def delete_files(self, repo_id: str, paths: list[str], repo_type: str = "dataset") -> str:
        with self.lock:
            repo = self.repo(repo_id, repo_type)
            tree = {p: e for p, e in repo.resolve("main").tree.items() if p not in paths}
            return self._commit(repo, "main", tree, "deleted")

    def corrupt(self, repo_id: str, path: str, data: bytes | None = None, repo_type: str = "dataset",
                keep_metadata: bool = True) -> None:
        """Change the stored bytes of a file. keep_metadata=True: the listing still reports the old hashes and
        size (storage corruption / a tampering CDN); False: a new commit with the new content (tampering
        through the API: the listing is consistent with the new bytes)."""
        with self.lock:
            entry = self.head(repo_id, repo_type).tree[path]
            old = self._content(entry)
            if data is None:
                data = bytes([old[0] ^ 0xFF]) + old[1:] if old else b"x"
            if not keep_metadata:
                self.put_files(repo_id, {path: data}, repo_type, lfs=entry.is_lfs, message="tampered")
                return
            if entry.is_lfs:
                self.lfs[entry.lfs_sha256] = data
            else:
                entry.content = data

    # ---- model -----------------------------------------------------------------------------------
    def _content(self, e: Entry) -> bytes:
        return self.lfs[e.lfs_sha256] if e.is_lfs else e.content

    def _entry(self, data: bytes, lfs: bool) -> Entry:
        if lfs:
            sha = hashlib.sha256(data).hexdigest()
            self.lfs[sha] = data
            return Entry(len(data), git_blob_sha1(lfs_pointer(sha, len(data))), lfs_sha256=sha)
        return Entry(len(data), git_blob_sha1(data), content=data)

    def _is_lfs(self, path: str, size: int, sample: bytes) -> bool:
        name = path.rsplit("/", 1)[-1]
        return (size >= self.lfs_threshold or b"\0" in sample
                or any(fnmatch.fnmatch(name, p) for p in GITATTRIBUTES_PATTERNS))

    def _commit(self, repo: Repo, branch: str, tree: dict[str, Entry], message: str) -> str:
        self._n += 1
        parent = repo.branches.get(branch)
        oid = hashlib.sha1(f"{parent}|{message}|{self._n}|{time.time()}|{sorted(tree)}".encode()).hexdigest()
        repo.commits[oid] = Commit(oid, parent, message, tree)
        repo.branches[branch] = oid
        return oid

    def create_repo(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_type, repo_id, private)
            self.repos[(repo_type, repo_id)] = repo
            self._commit(repo, "main", {".gitattributes": self._entry(GITATTRIBUTES, False)}, "initial commit")
            return repo


def _valid_path(path: str) -> bool:
    return not (path.startswith("/") or ".." in path.split("/") or path == "")


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    timeout = 10  # idle keep-alive connections end instead of holding a thread forever

    _API = r"/api/(?P<t>dataset|model|space)s/(?P<ns>[^/]+)/(?P<name>[^/]+)"
    _WEB = r"/(?:(?P<t>dataset|space)s/)?(?P<ns>[^/]+)/(?P<name>[^/]+)"
    ROUTES = [
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("GET", _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("GET", _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", _API + r"/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", _WEB + r"\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/__lfs/upload/(?P<oid>[0-9a-f]{64})", "lfs_put"),
        ("POST", r"/__lfs/verify/(?P<oid>[0-9a-f]{64})", "lfs_verify"),
        ("HEAD", _WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("GET", _WEB + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]

    def log_message(self, *args) -> None:  # no access log (it would carry nothing secret, but stays quiet)
        pass

    # ---- plumbing --------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        hub = self.hub
        authed = self._authorized()
        with hub.lock:
            hub.requests.append((method, url.path, authed))
        for m, pattern, name in self.ROUTES:
            if m != method:
                continue
            match = re.fullmatch(pattern, url.path)
            if match:
                groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                try:
                    getattr(self, "h_" + name)(groups, query)
                except _Drop:
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                except HubError as e:
                    headers = {**({"X-Error-Code": e.code} if e.code else {}), "X-Error-Message": e.message,
                               **e.headers}
                    self._json({"error": e.message, **e.body}, e.status, headers)
                return
        with hub.lock:
            hub.unhandled.append((method, url.path))
        self._read_body()
        self._json({"error": f"not implemented by the test hub: {method} {url.path}"}, 404)

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _authorized(self) -> bool:
        token = self.hub.token
        got = self.headers.get("Authorization", "")
        return bool(token) and got == f"Bearer {token}"

    def _require_write(self) -> None:
        if self.hub.token and not self._authorized():
            raise HubError(401, "Invalid credentials in Authorization header")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type: str | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for k, v in (headers or {}).items():
            self.send_header(k, str(v))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200, headers: dict | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers, "application/json")

    def _repo(self, g: dict) -> Repo:
        key = (g.get("t") or "model", f"{g['ns']}/{g['name']}")
        repo = self.hub.repos.get(key)
        # As the Hub: a private repo is invisible without valid credentials (401 RepoNotFound).
        if repo is None or (repo.private and self.hub.token and not self._authorized()):
            raise HubError(401 if repo is not None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _rev(self, repo: Repo, rev: str) -> Commit:
        commit = repo.resolve(rev)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        return commit

    def _fail(self, kind: str) -> str | None:
        """The failure mode if this request of `kind` must fail (counted under the lock)."""
        hub = self.hub
        with hub.lock:
            f = hub.failure
            if f is not None and f.should_fail(kind):
                return f.mode
        return None

    # ---- routes ----------------------------------------------------------------------------------
    def h_create_repo(self, g, q):
        body = json.loads(self._read_body() or b"{}")
        self._require_write()
        repo_type = body.get("type") or "model"
        ns = body.get("organization") or "user"
        repo_id = f"{ns}/{body['name']}"
        url = f"{self.hub.endpoint}/{PREFIXES[repo_type]}{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                raise HubError(409, "You already created this repo", body={"url": url})
            private = body.get("visibility") == "private" or bool(body.get("private"))
            self.hub.create_repo(repo_id, repo_type, private=private)
        self._json({"url": url, "name": repo_id, "id": repo_id})

    def h_validate_yaml(self, g, q):
        self._read_body()
        self._json({"errors": [], "warnings": []})

    def h_repo_info(self, g, q):
        with self.hub.lock:
            repo = self._repo(g)
            commit = self._rev(repo, g.get("rev") or "main")
            siblings = [{"rfilename": p} for p in sorted(commit.tree)]
        self._json({"_id": repo.repo_id, "id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.oid,
                    "private": repo.private, "disabled": False, "gated": False, "downloads": 0, "likes": 0,
                    "tags": [], "siblings": siblings,
                    "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.date))})

    def h_tree(self, g, q):
        recursive = q.get("recursive", "false").lower() in ("true", "1")
        with self.hub.lock:
            repo = self._repo(g)
            commit = self._rev(repo, g["rev"])
            base = (g.get("path") or "").strip("/")
            prefix = base + "/" if base else ""
            items: dict[str, dict] = {}
            for path, e in commit.tree.items():
                if not path.startswith(prefix):
                    continue
                rest = path[len(prefix):].split("/")
                depth = len(rest) if recursive else 1
                for i in range(1, min(len(rest), depth) + 1):
                    sub = prefix + "/".join(rest[:i])
                    if i < len(rest):
                        items.setdefault(sub, {"type": "directory", "oid": hashlib.sha1(sub.encode()).hexdigest(),
                                               "size": 0, "path": sub})
                    else:
                        item = {"type": "file", "oid": e.oid, "size": e.size, "path": sub}
                        if e.is_lfs:
                            item["lfs"] = {"oid": e.lfs_sha256, "size": e.size,
                                           "pointerSize": len(lfs_pointer(e.lfs_sha256, e.size))}
                        items[sub] = item
            if base and not items:
                raise HubError(404, f"{base} does not exist", "EntryNotFound", {"X-Repo-Commit": commit.oid})
        ordered = [items[k] for k in sorted(items)]
        start = int(q.get("cursor", "0"))
        page = ordered[start:start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(ordered):
            url = urlsplit(self.path)
            query = "&".join(f"{k}={quote(v)}" for k, v in q.items() if k != "cursor")
            nxt = f"{self.hub.endpoint}{url.path}?{query}&cursor={start + self.hub.page_size}"
            headers["Link"] = f'<{nxt}>; rel="next"'
        self._json(page, headers=headers)

    def h_preupload(self, g, q):
        body = json.loads(self._read_body())
        self._require_write()
        with self.hub.lock:
            repo = self._repo(g)
            commit = self._rev(repo, g["rev"])
            out = []
            for f in body["files"]:
                sample = base64.b64decode(f.get("sample", ""))
                lfs = self.hub._is_lfs(f["path"], int(f["size"]), sample)
                existing = commit.tree.get(f["path"])
                oid = None
                if existing is not None:
                    oid = existing.lfs_sha256 if existing.is_lfs else existing.oid
                out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": oid})
        self._json({"files": out, "commitOid": commit.oid})

    def h_lfs_batch(self, g, q):
        body = json.loads(self._read_body())
        self._require_write()
        if body.get("operation") != "upload":
            raise HubError(422, "only uploads are supported by the test hub")
        self._repo(g)
        objects = []
        for obj in body["objects"]:
            oid, size = obj["oid"], int(obj["size"])
            item = {"oid": oid, "size": size, "authenticated": True}
            with self.hub.lock:
                present = oid in self.hub.lfs and len(self.hub.lfs[oid]) == size
            if not present:
                item["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/__lfs/upload/{oid}", "header": {}, "expires_in": 86400},
                    "verify": {"href": f"{self.hub.endpoint}/__lfs/verify/{oid}", "header": {}, "expires_in": 86400},
                }
            objects.append(item)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   content_type="application/vnd.git-lfs+json")

    def h_lfs_put(self, g, q):
        data = self._read_body()
        mode = self._fail("upload")
        if mode in ("drop", "apply_then_drop"):
            raise _Drop()
        if mode == "status":
            raise HubError(self.hub.failure.status, "simulated storage failure")
        if hashlib.sha256(data).hexdigest() != g["oid"]:
            raise HubError(400, "sha256 of the uploaded content does not match the object id")
        with self.hub.lock:
            self.hub.lfs[g["oid"]] = data
            self.hub.counts["upload"] += 1
        self._send(200)

    def h_lfs_verify(self, g, q):
        body = json.loads(self._read_body())
        with self.hub.lock:
            data = self.hub.lfs.get(g["oid"])
        if data is None or len(data) != int(body.get("size", -1)):
            raise HubError(404, "object not found")
        self._json({"success": True})

    def h_commit(self, g, q):
        raw = self._read_body()
        self._require_write()
        lines = [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
        mode = self._fail("commit")
        if mode == "drop":
            raise _Drop()
        if mode == "status":
            raise HubError(self.hub.failure.status, "simulated commit failure")
        hub = self.hub
        with hub.lock:
            repo = self._repo(g)
            branch = g["rev"]
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            head = repo.resolve(branch)
            header = next((x["value"] for x in lines if x["key"] == "header"), {})
            if header.get("parentCommit") and header["parentCommit"] != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            tree = dict(head.tree)
            for item in lines:
                key, v = item["key"], item["value"]
                if key == "header":
                    continue
                path = v["path"]
                if not _valid_path(path):
                    raise HubError(400, f"invalid path {path!r}")
                if key == "file":
                    data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                    tree[path] = hub._entry(data, False)
                elif key == "lfsFile":
                    data = hub.lfs.get(v["oid"])
                    if data is None:
                        raise HubError(422, f"LFS object {v['oid']} of {path} was not uploaded")
                    tree[path] = Entry(len(data), git_blob_sha1(lfs_pointer(v["oid"], len(data))), lfs_sha256=v["oid"])
                elif key == "deletedFile":
                    if path not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del tree[path]
                elif key == "deletedFolder":
                    pre = path.rstrip("/") + "/"
                    for p in [p for p in tree if p.startswith(pre)]:
                        del tree[p]
                else:
                    raise HubError(400, f"unknown commit operation {key}")
            oid = hub._commit(repo, branch, tree, header.get("summary", ""))
            hub.counts["commit"] += 1
        if mode == "apply_then_drop":
            raise _Drop()
        self._json({"success": True, "commitOid": oid, "hookOutput": "", "pullRequestUrl": None,
                    "commitUrl": f"{hub.endpoint}/{PREFIXES[repo.repo_type]}{repo.repo_id}/commit/{oid}"})

    def h_resolve(self, g, q):
        with self.hub.lock:
            repo = self._repo(g)
            commit = self._rev(repo, g["rev"])
            entry = commit.tree.get(g["path"])
            if entry is None:
                raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.oid})
            data = self.hub._content(entry)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "ETag": f'"{entry.oid}"'}
        if entry.is_lfs:
            headers.update({"X-Linked-Etag": f'"{entry.lfs_sha256}"', "X-Linked-Size": entry.size,
                            "ETag": f'"{entry.lfs_sha256}"'})
        rng = self.headers.get("Range")
        if rng and self.command == "GET":
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if m:
                lo = int(m.group(1))
                hi = int(m.group(2)) if m.group(2) else len(data) - 1
                headers["Content-Range"] = f"bytes {lo}-{hi}/{len(data)}"
                self._send(206, data[lo:hi + 1], headers, "application/octet-stream")
                return
        self._send(200, data, headers, "application/octet-stream", length=len(data))
