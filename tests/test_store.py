"""Atomic artefacts and manifest verification."""
import json

import pytest

from saeflow import store

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
