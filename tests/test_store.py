"""Atomic artefacts and manifest verification."""
import json
from pathlib import Path

import pytest

from saeflow.workflow import store

NODE = {"key": "k" * 20, "step": "s", "params": {"p": 1}, "upstream": {}, "inputs": {}, "labels": {}}


def test_artefact_written_atomically_with_manifest(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    with store.write_artefact(final, NODE) as art:
        art.path("a/b.txt").write_text("hello")
        assert not final.exists()  # nothing at the final path until the block completes
        art.record(extra=3)
    m = store.read_manifest(final)
    assert m["key"] == NODE["key"] and m["extra"] == 3 and set(m["files"]) == {"a/b.txt"}
    assert m["files"]["a/b.txt"]["sha256"] == store.sha256_file(final / "a/b.txt")
    for field in ("versions", "host", "start", "end", "wall_s", "peak_rss_mb", "fingerprint"):
        assert field in m
    assert store.verify_artefact(final) == []


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    with pytest.raises(RuntimeError):
        with store.write_artefact(final, NODE) as art:
            art.path("x").write_text("partial")
            raise RuntimeError("boom")
    assert not final.exists() and list((tmp_path / "s").iterdir()) == []


def test_verify_detects_corruption_and_removes(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    with store.write_artefact(final, NODE) as art:
        art.path("x").write_text("good")
    (final / "x").write_text("evil")
    (final / "extra").write_text("?")
    problems = store.verify_artefact(final)
    assert "sha256 mismatch for x" in problems and "unexpected file extra" in problems
    bad = store.verify_store(tmp_path, remove=True)
    assert list(bad) == [str(final)] and not final.exists()


def test_missing_manifest_is_incomplete(tmp_path):
    d = tmp_path / "s" / NODE["key"]
    d.mkdir(parents=True)
    (d / "x").write_text("no manifest")
    assert "no manifest.json" in store.verify_artefact(d)[0]


def test_write_json_atomic_roundtrip(tmp_path):
    p = tmp_path / "a.json"
    store.write_json_atomic(p, {"b": [1, 2]})
    assert json.loads(p.read_text()) == {"b": [1, 2]} and [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_files_follow_the_umask(tmp_path):
    import os

    old = os.umask(0o027)
    try:
        final = tmp_path / "s" / NODE["key"]
        with store.write_artefact(final, NODE) as art:
            p = art.path("x.bin")
            p.write_bytes(b"1")
            os.chmod(p, 0o600)  # as safetensors writes its files
        assert (final / "x.bin").stat().st_mode & 0o777 == 0o640
        assert (final / store.MANIFEST).stat().st_mode & 0o777 == 0o640
        assert final.stat().st_mode & 0o777 == 0o750
    finally:
        os.umask(old)


def test_a_complete_artefact_of_another_run_is_kept(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    with store.write_artefact(final, NODE) as art:
        art.path("x").write_text("first run")
    with store.write_artefact(final, NODE) as art:  # a second run finished the same key
        art.path("x").write_text("second run")
    assert art.outcome == "existing" and (final / "x").read_text() == "first run"
    assert store.verify_artefact(final) == [] and [p.name for p in (tmp_path / "s").iterdir()] == [NODE["key"]]


def test_a_broken_artefact_is_replaced(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    final.mkdir(parents=True)
    (final / "x").write_text("left by a deleted manifest")
    with store.write_artefact(final, NODE) as art:
        art.path("x").write_text("rebuilt")
    assert art.outcome == "installed" and (final / "x").read_text() == "rebuilt" and store.verify_artefact(final) == []
    assert [p.name for p in (tmp_path / "s").iterdir()] == [NODE["key"]]


def test_key_lock_is_exclusive_across_processes(tmp_path):
    import subprocess
    import sys

    final = tmp_path / "s" / NODE["key"]
    code = ("import sys; from saeflow.workflow import store\n"
            f"with store.key_lock({str(final)!r}, blocking=False) as got: print(got)")
    with store.key_lock(final) as held:
        assert held
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.strip() == "False"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_verify_inputs_names_the_file(tmp_path):
    final = tmp_path / "s" / NODE["key"]
    with store.write_artefact(final, NODE) as art:
        art.path("x").write_text("good")
    assert store.verify_inputs({"up": final}, {"up": NODE["key"]}) == {"up": 1}
    (final / "x").write_text("evil")
    with pytest.raises(store.CorruptInput, match=r"s/k+/x does not match its manifest.*saeflow verify --remove"):
        store.verify_inputs({"up": final}, {"up": NODE["key"]})
    (final / "x").write_text("longer than before")
    with pytest.raises(store.CorruptInput, match="wrong size"):
        store.verify_inputs({"up": final}, {"up": NODE["key"]})
    with pytest.raises(store.CorruptInput, match="expected"):
        store.verify_inputs({"up": final}, {"up": "0" * 20})


def test_dependents_follow_manifests(tmp_path):
    def art(key, up):
        with store.write_artefact(tmp_path / "s" / key, {**NODE, "key": key, "upstream": up}) as a:
            a.path("x").write_text(key)

    art("a" * 20, {})
    art("b" * 20, {"in": "a" * 20})
    art("c" * 20, {"in": "b" * 20})
    art("d" * 20, {})
    deps = store.dependents(tmp_path, {"a" * 20})
    assert {Path(p).name: v for p, v in deps.items()} == {"b" * 20: {"a" * 20}, "c" * 20: {"a" * 20}}
    (tmp_path / "s" / ("a" * 20) / "x").write_text("evil")
    bad = store.verify_store(tmp_path, remove=True)
    assert list(bad) == [str(tmp_path / "s" / ("a" * 20))]
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["d" * 20]


def test_require_finite():
    import numpy as np

    from saeflow import tensors

    tensors.require_finite({"a": 1.0, "b": np.arange(3)}, "x")
    with pytest.raises(FloatingPointError, match=r"x: non-finite fvu = nan, H \(1 of 3 non-finite\)"):
        tensors.require_finite({"fvu": float("nan"), "H": [0.0, np.inf, 1.0]}, "x")
