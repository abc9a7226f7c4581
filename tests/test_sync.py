"""`saeflow sync`: push / pull of data/ against a plain directory and against a local Hub server driven
by the real huggingface_hub client (tests/hub_server.py).

Properties: the remote layout; a second push uploads nothing; an interrupted push leaves whole commits and a
rerun uploads only the rest; a pulled store verifies and a fresh workflow copy plans nothing for it;
corrupted or tampered remote files are rejected with nothing half-written left; prune is off by default;
the token never appears in output, logs or repr; pickles are never loaded.
"""
from __future__ import annotations

import ast
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from saeflow.hub import remotes, sync
from saeflow.workflow import keys, store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer  # noqa: E402

# huggingface_hub's own LFS PUT (data=<file>) triggers this httpx2 deprecation warning; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_SECRETTOKEN123"
REPO = "alice/saeflow-data"
BATCH = 3


# ---- a small data/ tree ------------------------------------------------------------------------------

def make_artefact(store_dir: Path, step: str, params: dict, files: dict[str, bytes], upstream=None) -> str:
    """A real store artefact (write_artefact) whose manifest hashes to its key."""
    digest = keys.sha256_hex(f"code of {step}")
    key = keys.node_key(step, params, upstream or {}, {}, digest)
    node = {"key": key, "step": step, "params": params, "upstream": upstream or {}, "inputs": {},
            "fingerprint": {"digest": digest}}
    with store.write_artefact(store_dir / step / key, node) as art:
        for rel, data in files.items():
            art.path(rel).write_bytes(data)
    (store_dir / step / key / ".snakemake_timestamp").touch()
    return key


def binary(n: int, seed: int) -> bytes:
    import random

    rng = random.Random(seed)
    return b"\0" + bytes(rng.getrandbits(8) for _ in range(n - 1))


@pytest.fixture
def data(tmp_path) -> dict:
    d = tmp_path / "data"
    st = d / "store"
    arts = {
        "corpus": make_artefact(st, "corpus", {"n": 1}, {"docs.parquet": binary(5000, 1), "info.json": b'{"a": 1}\n'}),
        "tokenizer": make_artefact(st, "tokenizer", {"v": 400}, {"tokenizer.json": b'{"vocab": {}}\n',
                                                                 "extra/merges.txt": b"a b\nc d\n"}),
        "windows": make_artefact(st, "windows", {"ctx": 24}, {"windows.safetensors": binary(20000, 2),
                                                              "sub/stats.json": b"{}\n"}),
        "train_dict": make_artefact(st, "train_dict", {"k": 8}, {"sae/cfg.json": b'{"d": 32}\n',
                                                     "sae/sae_weights.safetensors": binary(7000, 3)}),
    }
    published = {
        "t/synthetic/20250101_000000/run_config.json": b'{"preset": "t"}\n',
        "t/synthetic/20250101_000000/bench.json": b"{}\n",
        "t/synthetic/20250101_000000/h_pos/layer1/ctx8.parquet": binary(3000, 4),
        "figures/entropy_vs_depth_grid.png": binary(4000, 5),
        "README.md": b"---\nlicense: cc-by-4.0\n---\n# saeflow artefacts\n",
    }
    for rel, content in published.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(content)
    excluded = ["logs/corpus/x.log", "benchmarks/corpus/x.tsv",
                f"store/windows/.tmp-{arts['windows']}-ab12cd34/part.bin",
                ".snakemake/metadata/x", "t/synthetic/.published/abc.json", "store/corpus/.manifest.json.1234.tmp"]
    for rel in excluded:
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(b"local only\n")
    expected = {}
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_file() and rel not in excluded and not rel.endswith(".snakemake_timestamp"):
            expected["README.md" if rel == "README.md" else f"data/{rel}"] = p.read_bytes()
    return {"dir": d, "store": st, "arts": arts, "expected": expected, "excluded": excluded}


def artefact_paths(files, step, key) -> list[str]:
    return sorted(p for p in files if p.startswith(f"data/store/{step}/{key}/"))


# ---- remotes -----------------------------------------------------------------------------------------

class FlakyDirRemote(remotes.LocalDirRemote):
    """A directory remote whose uploads fail after `fail_after` successful batches (None: never)."""

    fail_after: int | None = None
    done = 0

    def upload(self, files, message):
        if self.fail_after is not None and self.done >= self.fail_after:
            raise OSError("simulated interruption")
        super().upload(files, message)
        self.done += 1


class DirCase:
    kind = "dir"

    def __init__(self, tmp_path):
        self.root = tmp_path / "remote"
        self.remote = FlakyDirRemote(self.root)

    def files(self) -> dict[str, bytes]:
        return {p.relative_to(self.root).as_posix(): p.read_bytes()
                for p in sorted(self.root.rglob("*")) if p.is_file()}

    def synced(self) -> dict[str, bytes]:
        return self.files()

    def fail_commits_after(self, n):
        self.remote.fail_after, self.remote.done = n, 0

    def heal(self):
        self.remote.fail_after = None

    def corrupt(self, path):
        p = self.root / path
        b = p.read_bytes()
        p.write_bytes(bytes([b[0] ^ 0xFF]) + b[1:])

    def plant(self, files: dict[str, bytes]):
        for rel, b in files.items():
            (self.root / rel).parent.mkdir(parents=True, exist_ok=True)
            (self.root / rel).write_bytes(b)

    def new_remote(self):
        return FlakyDirRemote(self.root)


class HubCase:
    kind = "hub"

    def __init__(self, server: HubServer):
        self.server = server
        self.remote = self.new_remote()

    def new_remote(self):
        return remotes.HubRemote(REPO, token=TOKEN, endpoint=self.server.endpoint, use_xet=False)

    def files(self) -> dict[str, bytes]:
        if ("dataset", REPO) not in self.server.repos:
            return {}
        return self.server.files(REPO)

    def synced(self) -> dict[str, bytes]:
        return {p: b for p, b in self.files().items() if p != ".gitattributes"}

    def fail_commits_after(self, n):
        self.server.fail_after(n, on="commit", mode="status", status=500)

    def heal(self):
        self.server.heal()

    def corrupt(self, path):
        self.server.corrupt(REPO, path)

    def plant(self, files):
        self.server.put_files(REPO, files)


@pytest.fixture
def hub(monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # the suite runs with HF_HUB_OFFLINE=1
    with HubServer(token=TOKEN, page_size=7) as server:  # small pages: the client must follow the Link header
        yield server
    assert server.unhandled == [], f"client called routes the test hub does not implement: {server.unhandled}"
    assert not any("xet" in path for _, path, _ in server.requests)


@pytest.fixture(params=["dir", "hub"])
def case(request, tmp_path):
    if request.param == "dir":
        return DirCase(tmp_path)
    return HubCase(request.getfixturevalue("hub"))


def complete_artefacts_only(files: dict[str, bytes]) -> None:
    """Every remote artefact that has a manifest has every file its manifest lists, with those bytes."""
    import hashlib

    for path, content in files.items():
        m = re.fullmatch(r"data/store/([^/]+)/([^/]+)/manifest.json", path)
        if m:
            for rel, meta in json.loads(content)["files"].items():
                got = files.get(f"data/store/{m.group(1)}/{m.group(2)}/{rel}")
                assert got is not None and hashlib.sha256(got).hexdigest() == meta["sha256"], (path, rel)


def no_temp_left(root: Path) -> None:
    assert [p for p in root.rglob("*") if p.name.startswith(".tmp-")] == []


# ---- push --------------------------------------------------------------------------------------------

def test_push_layout_then_second_push_uploads_nothing(case, data):
    rep = sync.push(data["dir"], case.remote, batch_size=BATCH)
    assert rep["uploaded"] == len(data["expected"]) and rep["skipped"] == {}
    assert rep["commits"] == -(-(len(data["expected"]) - 1) // BATCH) + 1  # the card goes alone, last
    assert case.synced() == data["expected"]  # README.md at the root, data/<rel>, nothing excluded
    complete_artefacts_only(case.synced())
    if case.kind == "hub":
        assert set(case.files()) - set(data["expected"]) == {".gitattributes"}
        n_commits = len(case.server.commits(REPO))
        lfs = {p for p, e in case.server.head(REPO).tree.items() if e.is_lfs}
        assert "data/store/windows/%s/windows.safetensors" % data["arts"]["windows"] in lfs
        assert "README.md" not in lfs and not any(p.endswith("manifest.json") for p in lfs)
    again = sync.push(data["dir"], case.new_remote(), batch_size=BATCH)
    assert again["upload"] == [] and again["commits"] == 0 and again["unchanged"] == len(data["expected"])
    if case.kind == "hub":
        assert len(case.server.commits(REPO)) == n_commits


def test_changed_file_is_the_only_upload(case, data):
    sync.push(data["dir"], case.remote)
    card = data["dir"] / "README.md"
    card.write_text(card.read_text() + "more\n")
    plan = sync.plan_push(data["dir"], case.new_remote())
    assert plan["upload"] == ["README.md"] and plan["delete"] == []
    sync.push(data["dir"], case.new_remote())
    assert case.synced()["README.md"] == card.read_bytes()


def test_dry_run_touches_nothing(case, data):
    rep = sync.push(data["dir"], case.remote, dry_run=True)
    assert sorted(rep["upload"]) == sorted(data["expected"]) and rep["commits"] == 0
    assert rep["upload"][-1] == "README.md"
    for step, key in ((s, data["arts"][s]) for s in data["arts"]):  # each manifest after its artefact's files
        paths = [p for p in rep["upload"] if p.startswith(f"data/store/{step}/{key}/")]
        assert paths[-1].endswith("/manifest.json")
    assert case.files() == {}
    if case.kind == "hub":
        assert case.server.repos == {} and {m for m, _, _ in case.server.requests} <= {"GET", "HEAD"}


def test_interrupted_push_leaves_whole_commits_and_resumes(case, data):
    total = len(data["expected"])
    case.fail_commits_after(2)
    with pytest.raises(Exception):
        sync.push(data["dir"], case.remote, batch_size=BATCH)
    partial = case.synced()
    assert len(partial) == 2 * BATCH
    complete_artefacts_only(partial)
    case.heal()
    rep = sync.push(data["dir"], case.new_remote(), batch_size=BATCH)
    assert rep["uploaded"] == total - 2 * BATCH and rep["unchanged"] == 2 * BATCH
    assert case.synced() == data["expected"]


def test_commit_applied_but_response_lost(hub, data):
    c = HubCase(hub)
    hub.fail_after(1, on="commit", mode="apply_then_drop", times=1)
    with pytest.raises(Exception):
        sync.push(data["dir"], c.remote, batch_size=BATCH)
    assert len(c.synced()) == 2 * BATCH  # the second commit was applied, its answer lost
    rep = sync.push(data["dir"], c.new_remote(), batch_size=BATCH)
    assert rep["uploaded"] == len(data["expected"]) - 2 * BATCH
    assert c.synced() == data["expected"]


def test_lfs_upload_failures(hub, data, monkeypatch):
    c = HubCase(hub)
    # A dropped connection during one LFS PUT is retried by the client: the push goes through.
    hub.fail_after(0, on="upload", mode="drop", times=1)
    t0 = time.time()
    assert sync.push(data["dir"], c.remote, batch_size=BATCH)["uploaded"] == len(data["expected"])
    assert time.time() - t0 < 30
    # Storage failing for good mid-push: no commit refers to a missing object, the rerun finishes.
    hub2 = HubServer(token=TOKEN)
    with hub2:
        c2 = HubCase(hub2)
        import huggingface_hub.utils._http as hf_http

        monkeypatch.setattr(hf_http.time, "sleep", lambda s: None)  # skip the client's backoff waits
        hub2.fail_after(2, on="upload", mode="status", status=500)
        with pytest.raises(Exception):
            sync.push(data["dir"], c2.remote, batch_size=BATCH)
        partial = c2.synced()
        assert 0 < len(partial) < len(data["expected"])
        complete_artefacts_only(partial)
        hub2.heal()
        rep = sync.push(data["dir"], c2.new_remote(), batch_size=BATCH)
        assert rep["uploaded"] == len(data["expected"]) - len(partial)
        assert c2.synced() == data["expected"]
        assert hub2.unhandled == []


def test_corrupt_local_artefact_is_not_pushed(case, data):
    key = data["arts"]["windows"]
    f = data["store"] / "windows" / key / "windows.safetensors"
    f.write_bytes(b"garbage")
    rep = sync.push(data["dir"], case.remote)
    assert list(rep["skipped"]) == [f"store/windows/{key}"]
    assert artefact_paths(case.synced(), "windows", key) == []


def test_prune_is_off_by_default(case, data):
    sync.push(data["dir"], case.remote)
    stale = {"data/store/corpus/0123456789abcdef0123/manifest.json": b"{}\n", "data/old/stale.txt": b"old\n",
             "notes.txt": b"not under data/\n"}
    case.plant(stale)
    # A local artefact that turned corrupt is not pushed, and its remote copy is never pruned.
    wkey = data["arts"]["windows"]
    (data["store"] / "windows" / wkey / "sub/stats.json").write_text("changed\n")
    rep = sync.push(data["dir"], case.new_remote())
    assert rep["delete"] == [] and set(stale) <= set(case.synced())
    rep = sync.push(data["dir"], case.new_remote(), prune=True)
    assert sorted(rep["delete"]) == sorted(p for p in stale if p.startswith("data/")) and rep["deleted"] == 2
    after = case.synced()
    assert "notes.txt" in after and not {p for p in stale if p.startswith("data/")} & set(after)
    assert artefact_paths(after, "windows", wkey) == artefact_paths(data["expected"], "windows", wkey)
    if case.kind == "hub":
        assert ".gitattributes" in case.files()


# ---- pull --------------------------------------------------------------------------------------------

def test_pull_into_fresh_dir_verifies(case, data, tmp_path):
    sync.push(data["dir"], case.remote)
    fresh = tmp_path / "fresh"
    rep = sync.pull(fresh, case.new_remote(), published=True)
    assert sorted(rep.pulled) == sorted(f"store/{s}/{k}" for s, k in data["arts"].items())
    assert rep.rejected == {} and rep.ignored == {}
    assert store.verify_store(fresh / "store") == {}
    for path, content in data["expected"].items():
        assert (fresh / sync.local_rel(path)).read_bytes() == content
    got = sorted(p.relative_to(fresh).as_posix() for p in fresh.rglob("*") if p.is_file())
    assert got == sorted(sync.local_rel(p) for p in data["expected"])  # nothing excluded, nothing extra
    again = sync.pull(fresh, case.new_remote(), published=True)
    assert again.pulled == [] and len(again.present) == len(data["arts"]) and again.published == []
    if case.kind == "hub":
        head = case.server.head(REPO).oid
        resolves = [p for m, p, _ in case.server.requests if "/resolve/" in p]
        assert resolves and all(f"/resolve/{head}/" in p for p in resolves)  # one pinned snapshot


def test_pull_published_keeps_local_changes(data, tmp_path):
    remote = remotes.LocalDirRemote(tmp_path / "remote")
    sync.push(data["dir"], remote)
    fresh = tmp_path / "fresh"
    sync.pull(fresh, remote, keys=[], published=True)
    assert list(store.iter_artefacts(fresh / "store")) == []
    card = fresh / "README.md"
    card.write_text("# edited here\n")
    (fresh / "figures/entropy_vs_depth_grid.png").unlink()
    rep = sync.pull(fresh, remote, keys=[], published=True)
    assert rep.kept_local == ["README.md"] and rep.published == ["figures/entropy_vs_depth_grid.png"]
    assert card.read_text() == "# edited here\n"
    rep = sync.pull(fresh, remote, keys=[], published=True, overwrite_published=True)
    assert rep.published == ["README.md"] and card.read_bytes() == data["expected"]["README.md"]
    no_temp_left(fresh)


def test_pull_selected_keys(case, data, tmp_path):
    sync.push(data["dir"], case.remote)
    fresh = tmp_path / "fresh"
    key = data["arts"]["windows"]
    rep = sync.pull(fresh, case.new_remote(), keys={key, "ffffffffffffffffffff"})
    assert rep.pulled == [f"store/windows/{key}"] and rep.missing == ["ffffffffffffffffffff"]
    assert [p.name for p in store.iter_artefacts(fresh / "store")] == [key]
    assert not (fresh / "README.md").exists()


def test_corrupted_remote_file_is_rejected(case, data, tmp_path):
    sync.push(data["dir"], case.remote)
    key = data["arts"]["windows"]
    case.corrupt(f"data/store/windows/{key}/windows.safetensors")
    fresh = tmp_path / "fresh"
    rep = sync.pull(fresh, case.new_remote())
    assert list(rep.rejected) == [f"store/windows/{key}"] and "sha256" in rep.rejected[f"store/windows/{key}"]
    assert not (fresh / "store/windows" / key).exists()
    no_temp_left(fresh)
    assert len(rep.pulled) == len(data["arts"]) - 1 and store.verify_store(fresh / "store") == {}


def test_tampered_remote_files_are_rejected(hub, data, tmp_path):
    c = HubCase(hub)
    sync.push(data["dir"], c.remote)
    wkey, dkey, ckey = data["arts"]["windows"], data["arts"]["train_dict"], data["arts"]["corpus"]
    # New bytes committed through the API: the listing agrees with them, the manifest does not.
    hub.corrupt(REPO, f"data/store/windows/{wkey}/windows.safetensors", keep_metadata=False)
    # A manifest edited to match different content no longer hashes to its key.
    mpath = f"data/store/train_dict/{dkey}/manifest.json"
    m = json.loads(hub.files(REPO)[mpath])
    m["params"]["k"] = 16
    hub.put_files(REPO, {mpath: json.dumps(m).encode()})
    # A regular (non-LFS) file corrupted in storage: caught by the size / sha256 check after download.
    hub.corrupt(REPO, f"data/store/corpus/{ckey}/info.json", data=b'{"a": 2}\n')
    fresh = tmp_path / "fresh"
    rep = sync.pull(fresh, c.new_remote())
    assert sorted(rep.rejected) == sorted([f"store/windows/{wkey}", f"store/train_dict/{dkey}", f"store/corpus/{ckey}"])
    assert "hash to its key" in rep.rejected[f"store/train_dict/{dkey}"]
    assert rep.pulled == [f"store/tokenizer/{data['arts']['tokenizer']}"]
    no_temp_left(fresh)
    assert [p.name for p in store.iter_artefacts(fresh / "store")] == [data["arts"]["tokenizer"]]


def test_interrupted_pull_leaves_nothing(case, data, tmp_path, monkeypatch):
    sync.push(data["dir"], case.remote)
    remote = case.new_remote()
    real = type(remote).download
    calls = []

    def dying(self, path, dest):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of an artefact
        return real(self, path, dest)

    monkeypatch.setattr(type(remote), "download", dying)
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        sync.pull(fresh, remote)
    monkeypatch.undo()
    no_temp_left(fresh)
    assert all(store.verify_artefact(a) == [] for a in store.iter_artefacts(fresh / "store"))


# ---- pickles -----------------------------------------------------------------------------------------

class Evil:
    """Unpickling this creates the marker file (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_from_the_remote_are_never_loaded(hub, data, tmp_path):
    import hashlib

    import numpy as np
    import pandas as pd
    import torch
    from safetensors.numpy import load_file

    marker = tmp_path / "PWNED"
    payload = pickle.dumps(Evil(marker))
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Evil(control)))  # the payload is live: unpickling it does create the file
    assert control.exists()

    c = HubCase(hub)
    sync.push(data["dir"], c.remote)
    st = tmp_path / "evil_store"
    # (a) an unlisted pickle planted in a valid artefact: never downloaded
    tkey = data["arts"]["tokenizer"]
    # (b) an artefact whose own manifest lists a .pt pickle: rejected whole
    pt_key = make_artefact(st, "train_lm", {"evil": 1}, {"model.pt": payload, "cfg.json": b"{}\n"})
    # (c) pickles disguised as safetensors / npz / parquet, listed in a self-consistent manifest: installed as
    #     bytes, and the project's loaders refuse them without unpickling
    dis_key = make_artefact(st, "windows", {"evil": 2}, {"windows.safetensors": payload, "x.npz": payload,
                                                         "t.parquet": payload})
    planted = {f"data/store/tokenizer/{tkey}/evil.pkl": payload}
    for step, key in (("train_lm", pt_key), ("windows", dis_key)):
        for p in (st / step / key).iterdir():
            if not p.name.startswith("."):
                planted[f"data/store/{step}/{key}/{p.name}"] = p.read_bytes()
    hub.put_files(REPO, planted)

    fresh = tmp_path / "fresh"
    rep = sync.pull(fresh, c.new_remote())
    assert list(rep.ignored) == [f"data/store/tokenizer/{tkey}/evil.pkl"] and "not listed" in str(rep.ignored)
    assert not (fresh / "store/tokenizer" / tkey / "evil.pkl").exists()
    assert "pickle" in rep.rejected[f"store/train_lm/{pt_key}"] and not (fresh / "store/train_lm" / pt_key).exists()
    art = fresh / "store/windows" / dis_key
    assert store.verify_artefact(art) == []
    assert hashlib.sha256((art / "windows.safetensors").read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    with pytest.raises(Exception):
        load_file(str(art / "windows.safetensors"))
    with pytest.raises(ValueError):
        np.load(art / "x.npz")  # allow_pickle=False is numpy's default
    with pytest.raises(Exception):
        pd.read_parquet(art / "t.parquet")
    raw = tmp_path / "payload.bin"
    raw.write_bytes((art / "windows.safetensors").read_bytes())
    with pytest.raises(pickle.UnpicklingError):
        torch.load(raw, weights_only=True)  # how any torch checkpoint would be read: no arbitrary callables
    assert not marker.exists()
    no_temp_left(fresh)


def _unsafe_loads(path: Path) -> list[str]:
    """Calls that can unpickle: pickle/dill/joblib/cloudpickle load(s), pandas read_pickle, torch.load
    without weights_only=True, numpy load with allow_pickle=True."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
        owner = f.value.id if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        const = lambda k: isinstance(kw.get(k), ast.Constant) and kw[k].value  # noqa: E731
        where = f"{path}:{node.lineno}"
        if owner in ("pickle", "cPickle", "dill", "joblib", "cloudpickle", "_pickle") and name in ("load", "loads"):
            out.append(f"{where} {owner}.{name}")
        elif name in ("Unpickler", "read_pickle"):
            out.append(f"{where} {name}")
        elif owner == "torch" and name == "load" and const("weights_only") is not True:
            out.append(f"{where} torch.load without weights_only=True")
        elif owner in ("np", "numpy") and name == "load" and "allow_pickle" in kw \
                and const("allow_pickle") is not False:
            out.append(f"{where} np.load with allow_pickle")
    return out


def test_no_unsafe_loads_in_source():
    files = sorted((ROOT / "src/saeflow").rglob("*.py")) + sorted((ROOT / "workflow/scripts").rglob("*.py"))
    assert len(files) > 10
    assert [bad for f in files for bad in _unsafe_loads(f)] == []
    for f in files:  # text check too, for forms the AST check does not name (aliases, getattr)
        text = f.read_text()
        assert not re.search(r"\bpickle\.loads?\(|allow_pickle\s*=\s*True|read_pickle\(", text), f
    # the checker itself catches what it must
    probe = ROOT / "tests" / ".probe_unsafe.py"
    try:
        probe.write_text("import pickle, torch, numpy as np\npickle.load(f)\ntorch.load(p)\n"
                         "torch.load(p, weights_only=False)\nnp.load(p, allow_pickle=True)\n"
                         "torch.load(p, weights_only=True)\nnp.load(p)\n")
        assert len(_unsafe_loads(probe)) == 4
    finally:
        probe.unlink()


# ---- command line, token -----------------------------------------------------------------------------

def cli_env(hub: HubServer | None, tmp_path: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_TOKEN", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", HF_HOME=str(tmp_path / "hf_home"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1")
    if hub is not None:
        env["HF_ENDPOINT"] = hub.endpoint
    env.update(extra)
    return env


def saeflow_cli(args: list[str], env: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saeflow.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_cli_token_never_printed(hub, data, tmp_path):
    env = cli_env(hub, tmp_path, HF_TOKEN=TOKEN)
    outputs = []

    def run(*args, env=env, ok=True):
        res = saeflow_cli(list(args), env, tmp_path)
        outputs.append(res.stdout + res.stderr)
        assert (res.returncode == 0) == ok, res.stdout + res.stderr
        return res

    d = str(data["dir"])
    res = run("sync", "push", "--repo", REPO, "--data", d, "--dry-run")
    assert f"would upload {len(data['expected'])} files" in res.stdout and hub.repos == {}
    res = run("sync", "push", "--repo", REPO, "--data", d, "--batch-size", "4")
    assert f"uploaded {len(data['expected'])} files" in res.stdout
    assert HubCase(hub).synced() == data["expected"]
    assert all(authed for m, p, authed in hub.requests if m == "POST" and "/__lfs/" not in p)  # the token was sent
    res = run("sync", "push", "--repo", REPO, "--data", d)
    assert "uploaded 0 files" in res.stdout
    res = run("sync", "pull", "--repo", REPO, "--data", str(tmp_path / "pulled"), "--all", "--published")
    assert f"pulled {len(data['arts'])} artefacts" in res.stdout
    assert store.verify_store(tmp_path / "pulled/store") == {}
    # Failures print one line, with the token masked even if a message carried it.
    (data["dir"] / "README.md").write_text("# changed\n")
    hub.fail_after(0, on="commit", status=500)
    res = run("sync", "push", "--repo", REPO, "--data", d, ok=False)
    assert "error: sync push failed" in res.stderr
    hub.heal()
    res = run("sync", "push", "--repo", REPO, "--data", d, env=cli_env(hub, tmp_path, HF_TOKEN="hf_wrong"), ok=False)
    assert "401" in res.stderr
    res = run("sync", "push", "--repo", REPO, "--data", d, "--token-env", "MY_HF_TOKEN",
              env=cli_env(hub, tmp_path, MY_HF_TOKEN=TOKEN))
    assert "uploaded 1 files" in res.stdout
    for text in outputs:
        assert TOKEN not in text
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert TOKEN.encode() not in p.read_bytes(), p
    assert TOKEN not in repr(hub.requests)
    remote = remotes.HubRemote(REPO, token=TOKEN)
    assert TOKEN not in repr(remote) and TOKEN not in remote.describe()


def test_pull_of_a_missing_or_private_repo_is_an_error(hub, data, tmp_path):
    """Not "pulled 0 artefacts" with exit 0: a misspelt repo, a private one without a token, a missing directory."""
    env = cli_env(hub, tmp_path, HF_TOKEN=TOKEN)
    res = saeflow_cli(["sync", "push", "--repo", "user/secret", "--private", "--data", str(data["dir"])], env, tmp_path)
    assert res.returncode == 0, res.stderr
    anonymous = cli_env(hub, tmp_path)
    for args, env_ in ((["--repo", "user/secret"], anonymous), (["--repo", "user/no-such-repo"], env),
                       (["--remote-dir", str(tmp_path / "nowhere")], env)):
        res = saeflow_cli(["sync", "pull", *args, "--data", str(tmp_path / "p"), "--all"], env_, tmp_path)
        assert res.returncode == 1 and "does not exist or is not readable" in res.stderr, res.stdout + res.stderr
        assert "pulled" not in res.stdout and len(res.stderr.strip().splitlines()) == 1
    res = saeflow_cli(["sync", "pull", "--repo", "user/secret", "--data", str(tmp_path / "p"), "--all"], env, tmp_path)
    assert res.returncode == 0 and f"pulled {len(data['arts'])} artefacts" in res.stdout, res.stderr


def test_cli_remote_dir_roundtrip(data, tmp_path):
    env = cli_env(None, tmp_path)
    res = saeflow_cli(["sync", "push", "--remote-dir", str(tmp_path / "r"), "--data", str(data["dir"])], env, tmp_path)
    assert res.returncode == 0, res.stderr
    res = saeflow_cli(["sync", "pull", "--remote-dir", str(tmp_path / "r"), "--data", str(tmp_path / "p"), "--all"],
                      env, tmp_path)
    assert res.returncode == 0 and f"pulled {len(data['arts'])} artefacts" in res.stdout, res.stderr
    assert store.verify_store(tmp_path / "p/store") == {} and not (tmp_path / "p/README.md").exists()


def test_cli_startup_stays_light():
    code = ("import sys, saeflow.cli; heavy = [m for m in ('torch', 'huggingface_hub', 'numpy', 'pandas') "
            "if m in sys.modules]; print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert res.stdout.strip() == "[]", res.stdout + res.stderr


# ---- workflow: a pulled store plans nothing, and the sync_push rule ----------------------------------

from test_workflow import CONFIG, copy_workflow  # noqa: E402

CHEAP = ("corpus", "tokenizer", "windows")


def manifests(paths):
    """Snakemake targets of store artefacts (rule outputs are their manifests)."""
    return [f"{p}/manifest.json" for p in paths]


def snakemake(wd: Path, env: dict, *args: str, check: bool = True, configs=(CONFIG,)) -> subprocess.CompletedProcess:
    res = subprocess.run([sys.executable, "-m", "snakemake", "--configfile", *configs, "--cores", "2", *args], cwd=wd,
                         env=env, capture_output=True, text=True, timeout=600)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{res.stdout[-3000:]}\n{res.stderr[-5000:]}")
    return res


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A workflow copy with the cheap nodes of the tiny config computed, and their store paths."""
    from saeflow.cli import load_plan

    wd = copy_workflow(tmp_path_factory.mktemp("wf_src"))
    plan = load_plan([str(wd / CONFIG)], wd)
    targets = sorted(n.path for n in plan.nodes.values() if n.step in CHEAP)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    t0 = time.time()
    snakemake(wd, env, *manifests(targets))
    print(f"cheap nodes ({len(targets)}): {time.time() - t0:.1f} s")
    return wd, targets


@pytest.mark.workflow
def test_pulled_store_plans_nothing(built, hub, tmp_path):
    wd, targets = built
    env = cli_env(hub, tmp_path, HF_TOKEN=TOKEN)
    res = saeflow_cli(["sync", "push", "--repo", REPO, "--data", "data"], {**env, "PYTHONPATH": str(wd / "src")}, wd)
    assert res.returncode == 0, res.stderr
    pushed = HubCase(hub).synced()
    assert {str(Path(p).parent) for p in pushed if p.endswith("/manifest.json")} == set(targets), res.stdout
    assert not any(p.startswith(("data/logs/", "data/benchmarks/")) for p in pushed)
    wd2 = copy_workflow(tmp_path / "wf_dst", root=wd)  # the same code (the checkout may change meanwhile)
    res = saeflow_cli(["sync", "pull", "--repo", REPO, "--configfile", CONFIG], {**env, "PYTHONPATH": str(wd2 / "src")},
                      wd2)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"pulled {len(targets)} artefacts" in res.stdout
    assert store.verify_store(wd2 / "data/store") == {}
    assert sorted(str(p.relative_to(wd2)) for p in store.iter_artefacts(wd2 / "data/store")) == targets
    out = snakemake(wd2, {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}, "-n", *manifests(targets))
    assert "Nothing to be done" in out.stdout + out.stderr, out.stdout


README_COMMANDS = ["saeflow sync push --repo you/saeflow-data --dry-run", "saeflow sync push --repo you/saeflow-data",
                   "saeflow sync pull --repo you/saeflow-data", "saeflow sync pull --repo you/saeflow-data --all --published"]


@pytest.mark.workflow
def test_readme_sync_commands_as_written(built, hub, tmp_path):
    """The README's sync commands against the local Hub (HF_ENDPOINT), with `export HF_TOKEN=...` as the
    environment; the default config of both copies is the tiny config, which `sync pull` plans."""
    from readme import run_readme_command

    src, targets = built
    here, there = (copy_workflow(tmp_path / name, root=src) for name in ("here", "there"))
    for wd in (here, there):
        (wd / "config/config.yaml").write_text((wd / CONFIG).read_text())
    shutil.copytree(src / "data", here / "data")
    env = cli_env(hub, tmp_path, HF_TOKEN=TOKEN)

    def readme(cmd, wd):
        res = run_readme_command(cmd, wd, {**env, "PYTHONPATH": str(wd / "src")})
        assert res.returncode == 0, cmd + "\n" + res.stdout[-2000:] + res.stderr[-2000:]
        return res.stdout

    out = readme("saeflow sync push --repo you/saeflow-data --dry-run", here)
    assert "would upload" in out and not hub.repos
    out = readme("saeflow sync push --repo you/saeflow-data", here)
    assert "uploaded" in out and ("dataset", "you/saeflow-data") in hub.repos
    out = readme("saeflow sync pull --repo you/saeflow-data", there)
    assert f"pulled {len(targets)} artefacts" in out
    out = readme("saeflow sync pull --repo you/saeflow-data --all --published", there)
    assert f"{len(targets)} already present" in out and store.verify_store(there / "data/store") == {}


REPO_PATTERN = "^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
SYNC_SCHEMA = {"type": "object", "additionalProperties": False, "required": ["repo"],
               "properties": {"repo": {"type": "string", "pattern": REPO_PATTERN},
                              "revision": {"type": "string", "default": "main"},
                              "prune": {"type": "boolean", "default": False},
                              "token_env": {"type": "string", "default": "HF_TOKEN"},
                              "xet": {"type": "boolean", "default": True}}}


@pytest.mark.workflow
def test_sync_push_rule(built, hub, tmp_path):
    wd, targets = built
    # What the Snakefile and the schema get (idempotent: a no-op once they have it).
    snakefile = wd / "Snakefile"
    if 'include: "rules/hub.smk"' not in snakefile.read_text():
        snakefile.write_text(snakefile.read_text() + '\n\ninclude: "rules/hub.smk"\n')
    schema_path = wd / "config/schema.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    schema["properties"].setdefault("sync", SYNC_SCHEMA)
    schema_path.write_text(yaml.safe_dump(schema, sort_keys=False))
    (wd / "tests/configs/sync.yaml").write_text(f"sync: {{repo: {REPO}, xet: false}}\n")
    env = cli_env(hub, tmp_path, HF_TOKEN=TOKEN)
    env.pop("HF_HUB_DISABLE_XET")  # the rule passes --no-xet from the config
    res = snakemake(wd, env, "-p", "sync_push", configs=(CONFIG, "tests/configs/sync.yaml"))
    assert TOKEN not in res.stdout + res.stderr
    log = (wd / "data/logs/sync_push.log").read_text()
    assert "uploaded" in log and TOKEN not in log
    assert {p for p in HubCase(hub).synced()} == {f"data/{p}" for p in
                                                  (q.relative_to(wd / "data").as_posix()
                                                   for q in (wd / "data/store").rglob("*") if q.is_file())
                                                  if not sync.excluded(p)}
    # Without a sync section the rule does not exist and the DAG is unchanged.
    res = snakemake(wd, env, "-n", "sync_push", check=False)
    assert res.returncode != 0
    assert "Nothing to be done" in snakemake(wd, env, "-n", *manifests(targets)).stdout
