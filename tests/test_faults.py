"""Fault injection on the tiny DAG: nothing wrong ever looks complete, and nothing finished is lost.

Each test injects one fault a hostile but fair user meets (a flipped byte, a NaN, a deleted manifest, an
edited published file, a second checkout on the same store, a live job during `verify --remove`) and
asserts that the run ends in a clear error or a correct artefact, never in a finished-looking wrong one.
The tests share one workflow copy (module fixture) and run in file order; each leaves the store complete.
"""
from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_workflow import CONFIG, ENV, SNAKEMAKE, copy_workflow, planned, run

from saeflow.cli import load_plan
from saeflow.workflow import store

pytestmark = pytest.mark.workflow


def saeflow(wd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saeflow.cli", *args], cwd=wd, capture_output=True, text=True,
                          env={**ENV, "PYTHONPATH": str(wd / "src")})


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("faults"))
    run(wd)
    return wd


@pytest.fixture(scope="module")
def plan(wd):
    return load_plan([str(wd / CONFIG)], wd)


def node(plan, step, **labels):
    return next(n for n in plan.nodes.values() if n.step == step and all(n.labels.get(k) == v for k, v in labels.items()))


def shard(wd, plan, site="blocks.1.hook_resid_post") -> Path:
    return wd / node(plan, "cache_activations").path / site / "shard_00000.safetensors"


def payload_offset(path: Path) -> int:
    """Where a safetensors file's tensor bytes begin (8-byte header length + JSON header)."""
    return 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]


def edit_config(wd, mutate):
    path = wd / CONFIG
    original = path.read_text()
    cfg = yaml.safe_load(original)
    mutate(cfg)
    path.write_text(yaml.safe_dump(cfg))
    return lambda: path.write_text(original)


def rehash(artefact: Path) -> None:
    """Rewrite an artefact's manifest so it matches its (tampered) files: the fault then looks like one made
    when the artefact was written, which only the finiteness checks can catch."""
    m = store.read_manifest(artefact)
    m["files"] = store.file_hashes(artefact)
    store.write_json_atomic(artefact / store.MANIFEST, m)


def keys_planned(wd) -> set[str]:
    out = run(wd, "-n").stdout
    return {line.split("/")[-2] for line in out.splitlines()
            if line.strip().startswith("output:") and "data/store/" in line and "manifest.json" in line}


def test_an_edited_published_file_never_changes_the_store(wd, plan):
    run_dir = next((wd / "data/t/synthetic").glob("2*"))
    hpos = node(plan, "h_pos")
    src = wd / hpos.path / "layer1/ctx8.csv"
    before = src.read_bytes()
    with open(run_dir / "h_pos/layer1/ctx8.csv", "a") as f:
        f.write("an appended line\n")
    assert src.read_bytes() == before and store.verify_artefact(wd / hpos.path) == []
    res = saeflow(wd, "verify")
    assert res.returncode == 1 and "published run" in res.stdout and "h_pos/layer1/ctx8.csv differs" in res.stdout
    res = saeflow(wd, "verify", "--remove")
    assert res.returncode == 0 and not run_dir.exists(), res.stdout
    assert planned(wd) == {"publish_run": 1, "all": 1}
    run(wd)
    assert (run_dir / "h_pos/layer1/ctx8.csv").read_bytes() == before  # the same timestamp, re-materialised
    assert saeflow(wd, "verify").returncode == 0


def test_a_flipped_byte_is_refused_by_consumers_and_repaired_with_its_dependents(wd, plan):
    f = shard(wd, plan)
    off = payload_offset(f) + 100
    data = bytearray(f.read_bytes())
    data[off] ^= 0x01
    f.write_bytes(bytes(data))
    # A consumer that runs now (its params changed) refuses the input, naming the file and the repair.
    restore = edit_config(wd, lambda c: c["dictionaries"]["saelens-topk"].update(train_tokens=4352))
    try:
        res = run(wd, "--until", "train_dict", check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and f"{f.relative_to(wd)} does not match its manifest (sha256)" in out
        assert "saeflow verify --remove" in out
        assert [d for d in (wd / "data/store/train_dict").iterdir() if store.is_complete(d)
                and store.read_manifest(d)["params"]["train_tokens"] == 4352] == []
    finally:
        restore()
    res = saeflow(wd, "verify")
    assert res.returncode == 1 and "corrupt:" in res.stdout and "sha256 mismatch" in res.stdout
    cache = node(plan, "cache_activations")
    down = {n.key for n in plan.nodes.values() if any(a.key == cache.key for a in plan.ancestors(n.key)[:-1])}
    res = saeflow(wd, "verify", "--remove")
    assert res.returncode == 0, res.stdout + res.stderr
    removed = {Path(line.split()[1]).name for line in res.stdout.splitlines() if line.startswith("removed: ")}
    assert removed == down | {cache.key}  # the corrupt artefact and exactly its dependents
    # snakemake and saeflow status agree: exactly those are rebuilt.
    assert keys_planned(wd) == removed
    status = saeflow(wd, "status", "--configfile", CONFIG).stdout
    assert {line.split()[3] for line in status.splitlines() if line.startswith("would run")} == removed
    run(wd)
    assert planned(wd) == {} and store.verify_store(wd / "data/store") == {}
    assert saeflow(wd, "verify").returncode == 0


def test_a_nan_in_the_cache_fails_training_and_nothing_is_stored(wd, plan):
    """A NaN that entered the cache when it was written (the manifest matches it): the dictionary job
    fails at the step that meets it, naming it, and no dictionary, recon or summary appears."""
    cache = wd / node(plan, "cache_activations").path
    f = shard(wd, plan)
    original = f.read_bytes()
    data = bytearray(original)
    data[payload_offset(f): payload_offset(f) + 2] = b"\x00\x7e"  # float16 NaN as the first value
    f.write_bytes(bytes(data))
    rehash(cache)
    restore = edit_config(wd, lambda c: c["dictionaries"]["saelens-topk"].update(train_tokens=4352))
    try:
        before = set((wd / "data/store/recon").iterdir())
        res = run(wd, check=False)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and "FloatingPointError" in out and "non-finite" in out, out[-3000:]
        new = [d for d in (wd / "data/store/train_dict").iterdir()
               if store.is_complete(d) and store.read_manifest(d)["params"]["train_tokens"] == 4352]
        assert new == [] and set((wd / "data/store/recon").iterdir()) == before
    finally:
        restore()
        f.write_bytes(original)
        rehash(cache)
    run(wd)
    assert planned(wd) == {}


def test_a_deleted_manifest_is_rebuilt_and_its_consumers_refuse_it_meanwhile(wd, plan):
    ev = node(plan, "top_contexts")
    events = wd / ev.path
    (events / store.MANIFEST).unlink()
    assert not store.is_complete(events)
    status = saeflow(wd, "status", "--configfile", CONFIG).stdout
    assert [line.split()[2] for line in status.splitlines() if line.startswith("would run")] == ["top_contexts"]
    # Snakemake rebuilds the incomplete artefact; it also schedules its direct consumers ("input files
    # updated by another job"), which find their artefacts complete and exit without recomputing.
    consumers = [n for n in plan.nodes.values() if ev.key in n.upstream.values()]
    todo = planned(wd)
    assert todo.pop("top_contexts") == 1 and todo.pop("all") == 1
    assert sum(todo.values()) == len(consumers)
    def ident(c):  # Snakemake touches a finished job's output, so compare the file itself, not its mtime
        return (wd / c.target).stat().st_ino, (wd / c.target).read_bytes()

    before = {c.key: ident(c) for c in consumers}
    # A job reading it meanwhile refuses it (saeflow.workflow.jobs.start verifies every input first).
    with pytest.raises(store.CorruptInput, match="not a complete artefact"):
        store.verify_inputs({"events": events}, {"events": events.name})
    run(wd)
    assert store.is_complete(events) and planned(wd) == {} and store.verify_store(wd / "data/store") == {}
    for c in consumers:
        assert ident(c) == before[c.key]  # not recomputed
        log = (wd / "data/logs" / c.step / f"{c.key}.log").read_text()
        assert log.rstrip().endswith("nothing to do"), log[-300:]


def test_verify_remove_never_touches_a_live_jobs_temp_dir(wd, plan, tmp_path):
    final = wd / node(plan, "recon_summary").path
    tmp = final.parent / f".tmp-{final.name}-deadbeef"
    dead = final.parent / ".tmp-00000000000000000000-cafecafe"
    tmp.mkdir()
    (tmp / "partial.parquet").write_text("being written")
    dead.mkdir()
    with store.key_lock(final) as held:  # this test plays the live job
        assert held
        res = saeflow(wd, "verify", "--remove")
        assert res.returncode == 0 and tmp.is_dir() and "kept temporary dir of a live job" in res.stdout
        assert not dead.exists()
    res = saeflow(wd, "verify", "--remove")
    assert not tmp.exists() and "removed temporary dir" in res.stdout


def test_verify_of_a_missing_store_is_an_error(wd):
    res = saeflow(wd, "verify", "--store", "/nonexistent/store")
    assert res.returncode == 2 and "no such directory" in res.stderr and "intact" not in res.stdout


def test_two_checkouts_on_one_store_both_finish_and_lose_nothing(tmp_path):
    """Two checkouts whose configs name the same absolute store run one DAG at the same time: both finish,
    every key is computed once (the other run waits for its lock and then uses it), nothing is deleted."""
    shared = tmp_path / "shared" / "store"
    wds = []
    for name in ("a", "b"):
        w = copy_workflow(tmp_path / name)
        cfg = yaml.safe_load((w / CONFIG).read_text())
        cfg["store"] = str(shared)
        (w / CONFIG).write_text(yaml.safe_dump(cfg))
        wds.append(w)
    target = "figures/entropy_vs_depth_grid.png"
    procs = [subprocess.Popen([*SNAKEMAKE, "--cores", "1", target], cwd=w, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for w in wds]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    arts = list(store.iter_artefacts(shared))
    assert arts and store.verify_store(shared) == {}
    computed = {}
    steps = {a.parent.name for a in arts}
    for log in (shared.parent / "logs").rglob("*.log"):
        if log.parent.name not in steps:
            continue  # an export's log: a copy, not a keyed computation
        text = log.read_text()
        computed[log] = text.count("inputs verified")
        assert text.count("inputs verified") + text.count("already complete in the store") >= 1, log
    assert len(computed) == len(arts) and all(n == 1 for n in computed.values()), \
        {str(k): v for k, v in computed.items() if v != 1}
    waited = sum((shared.parent / "logs" / a.parent.name / f"{a.name}.log").read_text().count("already complete")
                 for a in arts)
    assert waited >= 1  # both runs started the same first job: one waited for the other's lock
    for w in wds:
        assert (w / target).stat().st_size > 10_000
        assert planned(w, target) == {}
