"""The published tree (saeflow.report.publish): layout, atomic and idempotent materialisation, the dataset card."""
import json
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from saeflow.report import publish
from saeflow.workflow import store


def _artefact(root: Path, step: str, key: str, files: dict[str, bytes], labels=None, **extra) -> Path:
    node = {"key": key, "step": step, "params": {}, "labels": labels or {}}
    with store.write_artefact(root / step / key, node) as art:
        for rel, data in files.items():
            art.path(rel).write_bytes(data)
        art.record(**extra)
    return root / step / key


@pytest.fixture
def run(tmp_path):
    st = tmp_path / "data" / "store"
    up = {
        "entropy_vs_depth": _artefact(st, "entropy_vs_depth", "a" * 20, {"entropy_comparison_resid_post_layer1.parquet": b"E",
                                                        "summary.json": b"{}"}),
        "locality_plots": _artefact(st, "locality_plots", "b" * 20, {"entropy_plots_resid_post_layer1/h.png": b"P",
                                                                      "entropy_vs_depth__t__s.png": b"F"}),
        "recon__topk__layer1": _artefact(st, "recon", "c" * 20, {"metrics.json": b"{}", "per_seq.parquet": b"R"}),
    }
    layout = publish.build_layout(up)
    pub = _artefact(st, "publish", "d" * 20, {"layout.json": json.dumps(layout).encode(),
                                              "run_config.json": b'{"preset": "t", "dataset": "s"}',
                                              "bench.json": json.dumps(publish.bench(up)).encode()},
                    labels={"preset": "t", "dataset": "s"}, timestamp="20260101_000000")
    return st, pub, layout


def test_layout_follows_the_seed_card(run):
    _, _, layout = run
    dests = {r["dest"] for r in layout}
    assert {"entropy_comparison_resid_post_layer1.parquet", "entropy_vs_depth/summary.json",
            "entropy_plots_resid_post_layer1/h.png", "locality_plots/entropy_vs_depth__t__s.png",
            "recon/topk_layer1/metrics.json", "recon/topk_layer1/per_seq.parquet",
            "manifests/entropy_vs_depth.json", "manifests/recon__topk__layer1.json"} <= dests
    assert all(len(r["sha256"]) == 64 for r in layout)


def test_colliding_destinations_are_rejected(tmp_path):
    st = tmp_path / "store"
    # a role other than the step's own name publishes under <folder>_<role>/, but files that go to the top of
    # the run (publish_top) still meet: two entropy artefacts under two roles collide
    a = _artefact(st, "entropy_vs_depth", "a" * 20, {"entropy_comparison_resid_post_layer1.parquet": b"1"})
    b = _artefact(st, "entropy_vs_depth", "b" * 20, {"entropy_comparison_resid_post_layer1.parquet": b"2"})
    with pytest.raises(ValueError, match="collides"):
        publish.build_layout({"entropy_vs_depth": a, "entropy2": b})
    p1, p2 = _artefact(st, "probe", "c" * 20, {"x": b"1"}), _artefact(st, "probe", "d" * 20, {"x": b"2"})
    assert {r["dest"] for r in publish.build_layout({"probe": p1, "probe2": p2}) if not r["dest"].startswith("manifests")} \
        == {"probe/x", "probe_probe2/x"}


def test_materialise_is_atomic_and_keeps_an_unchanged_run(run):
    st, pub, layout = run
    data = st.parent
    d = publish.materialise(pub, st, data)
    assert d == data / "t" / "s" / "20260101_000000"
    assert (d / "entropy_comparison_resid_post_layer1.parquet").read_bytes() == b"E"
    rc = json.loads((d / "run_config.json").read_text())
    assert rc["publish_key"] == "d" * 20 and rc["timestamp"] == "20260101_000000" and rc["preset"] == "t"
    assert set(json.loads((d / "bench.json").read_text())["steps"]) == {"entropy_vs_depth", "locality_plots", "recon__topk__layer1"}
    before = {p: p.stat().st_mtime_ns for p in d.rglob("*")}
    assert publish.materialise(pub, st, data) == d  # re-publishing: same directory, untouched
    assert {p: p.stat().st_mtime_ns for p in d.rglob("*")} == before
    assert [r["timestamp"] for r in publish.published_runs(data)] == ["20260101_000000"]


def test_corrupt_store_file_publishes_nothing(run):
    st, pub, layout = run
    (st / "recon" / ("c" * 20) / "per_seq.parquet").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match its manifest"):
        publish.materialise(pub, st, st.parent)
    assert not (st.parent / "t" / "s").exists() or not any((st.parent / "t" / "s").iterdir())


def test_dataset_card_front_matter_lists_only_present_tables():
    dests = ["entropy_comparison_resid_post_layer3.parquet", "entropy_comparison_resid_post_layer3_windows.parquet",
             "recon/topk_layer3/per_seq.parquet"]
    card = publish.dataset_card("# Title\n\nBody.", [{"preset": "p", "dataset": "d", "timestamp": "20260101_000000",
                                                     "publish_key": "k", "dests": dests}],
                                {"license": "cc-by-4.0", "pretty_name": "X", "tags": ["sae"]})
    assert card.startswith("---\n")
    front = yaml.safe_load(card.split("---\n")[1])
    assert front["license"] == "cc-by-4.0" and front["tags"] == ["sae"]
    names = [c["config_name"] for c in front["configs"]]
    assert names == ["entropy_features", "entropy_windows", "recon_per_sequence"]
    # The viewer paths name this run (its timestamp): an older run of the same preset never merges in.
    pattern = front["configs"][0]["data_files"][0]["path"]
    assert pattern == "data/p/d/20260101_000000/entropy_comparison_*[0-9].parquet"
    assert fnmatch("data/p/d/20260101_000000/entropy_comparison_resid_post_layer3.parquet", pattern)
    assert not fnmatch("data/p/d/20250101_000000/entropy_comparison_resid_post_layer3.parquet", pattern)
    assert not fnmatch("data/p/d/20260101_000000/entropy_comparison_resid_post_layer3_windows.parquet", pattern)
    assert "| p | d | 20260101_000000 | `k` |" in card and "Body." in card


def test_destinations_of_per_dictionary_roles():
    """A node of one dictionary and layer goes to <folder>/<dictionary>_layer<L>/, one of one dictionary to
    <folder>/<dictionary>/, the influence dictionary's scan (role = step) to the top of its folder."""
    assert publish.destination("inspect", "inspect__topk__layer1", "features.html") == "inspect/topk_layer1/features.html"
    assert publish.destination("autointerp", "autointerp__saelens-topk__layer0", "summary.json") == \
        "autointerp/saelens-topk_layer0/summary.json"
    assert publish.destination("recon", "recon__topk__layer3", "metrics.json") == "recon/topk_layer3/metrics.json"
    assert publish.destination("top_contexts", "top_contexts__transcoder", "top_contexts_layer1.parquet") == \
        "top_contexts/transcoder/top_contexts_layer1.parquet"
    assert publish.destination("top_contexts", "top_contexts", "latent_stats_layer1.parquet") == \
        "top_contexts/latent_stats_layer1.parquet"
    assert publish.destination("inspect_index", "inspect_index", "index.html") == "inspect_index/index.html"
    assert publish.destination("compare", "control", "compare.parquet") == "compare_control/compare.parquet"


def test_viewer_configs_match_each_depth_once_and_every_run():
    dests = ["top_contexts/top_contexts_layer1.parquet", "top_contexts/transcoder/top_contexts_layer1.parquet",
             "top_contexts/latent_stats_layer1.parquet", "autointerp/topk_layer1/latent_scores.parquet",
             "autointerp/topk_layer1/scores.parquet", "autointerp/topk_layer1/explanations.parquet",
             "probe/probe.parquet", "compare_control/compare.parquet", "inspect/topk_layer1/features.html"]
    runs = [{"preset": "a", "dataset": "d", "timestamp": "1_1", "dests": dests},
            {"preset": "b", "dataset": "d", "timestamp": "2_2", "dests": dests[:1]}]
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in publish.parquet_configs(runs)}
    assert configs["top_contexts"] == ["data/a/d/1_1/top_contexts/top_contexts_layer*.parquet",
                                       "data/a/d/1_1/top_contexts/*/top_contexts_layer*.parquet",
                                       "data/b/d/2_2/top_contexts/top_contexts_layer*.parquet"]
    assert configs["latent_stats"] == "data/a/d/1_1/top_contexts/latent_stats_layer*.parquet"
    assert configs["compare"] == "data/a/d/1_1/compare_control/compare.parquet"
    assert set(configs) == {"top_contexts", "latent_stats", "autointerp_scores", "autointerp_items",
                            "autointerp_explanations", "probe", "compare"}
    assert [publish.config_of(d) for d in dests] == ["top_contexts", "top_contexts", "latent_stats",
                                                     "autointerp_scores", "autointerp_items",
                                                     "autointerp_explanations", "probe", "compare", None]
