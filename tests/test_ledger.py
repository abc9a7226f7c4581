"""The results ledger (saeflow.report.ledger): the verdict rule at its boundaries, references matched by the
coordinates they name, and a ledger built from planted
artefacts (a recon, a probe and an autointerp node with their dictionary) whose rows carry the headlines, the
measured L0 and the provenance of their manifests."""

import pandas as pd
import pytest

from saeflow.evals.probe import wilson_interval
from saeflow.report import ledger
from saeflow.workflow import store


def test_verdict_rule():
    ref = {"range": [0.79, 0.81]}
    assert ledger.verdict(0.797, 0.793, 0.801, None) == "novel"
    assert ledger.verdict(0.797, 0.793, 0.801, ref) == "reproduced"
    assert ledger.verdict(0.80, 0.785, 0.815, ref) == "reproduced"        # CI 0.03 wide: within twice the range
    assert ledger.verdict(0.80, 0.70, 0.90, ref) == "inconclusive"        # too wide to decide
    assert ledger.verdict(0.78, 0.77, 0.795, ref) == "inconclusive"       # straddles the lower end
    assert ledger.verdict(0.51, 0.50, 0.52, ref) == "not reproduced"      # far below
    assert ledger.verdict(0.85, 0.82, 0.88, ref) == "not reproduced"


def test_references_match_the_coordinates_they_name():
    row = {"eval": "recon", "metric": "variance_explained", "preset": "gemma-2-2b", "dataset": "wikitext", "layer": 12,
           "dictionary": "gemma-scope-16k"}
    refs = [{"eval": "recon", "layer": 5, "range": [0, 1], "source": "L5"},
            {"eval": "probe", "range": [0, 1], "source": "probe"},
            {"eval": "recon", "metric": "fvu", "range": [0, 1], "source": "fvu"},
            {"eval": "recon", "preset": "gemma-2-2b", "layer": 12, "range": [0.79, 0.81], "source": "L12"}]
    assert ledger.reference_for(row, refs)["source"] == "L12"
    assert ledger.reference_for({**row, "layer": 5}, refs)["source"] == "L5"
    assert ledger.reference_for({**row, "eval": "steer", "metric": "steering_effect"}, refs) is None


def _artefact(root, step, key, labels, params, files, **extra):
    d = root / step / key
    d.mkdir(parents=True)
    for name, text in files.items():
        p = d / name
        if isinstance(text, pd.DataFrame):
            text.to_parquet(p, index=False)
        else:
            store.write_json_atomic(p, text)
    store.write_json_atomic(d / store.MANIFEST, {"key": key, "step": step, "labels": labels, "params": params,
                                                "end": "2026-12-06T10:00:00+00:00", "git_commit": "abc123def4567890",
                                                "device": "cpu", "host": "h", "wall_s": 1.5, "peak_rss_mb": 100.0,
                                                **extra})
    return d


def test_a_ledger_of_planted_artefacts(tmp_path):
    lab = {"preset": "p", "dataset": "d", "layer": 1, "dictionary": "topk", "kind": "sparsify-topk", "site": "resid_post"}
    dct = _artefact(tmp_path, "train_dict", "k" * 20, lab, {"hook_in": "blocks.1.hook_resid_post", "hook_out": None,
                                                            "d_sae": 512, "k": 32}, {})
    ev = {"value": 0.8, "lo": 0.79, "hi": 0.81}
    recon = _artefact(tmp_path, "recon", "r" * 20, lab, {}, {"metrics.json": {
        "ev": ev, "fvu": {"value": 0.2}, "ce_recovered": {"value": 0.9}, "kl": {"value": 0.01}, "dead_frac": 0.0,
        "l0": {"value": 31.5}, "n_tokens": 8000, "confidence": 0.95}})
    probe = _artefact(tmp_path, "probe", "q" * 20, {"preset": "p", "dataset": "d"}, {}, {"probe.parquet": pd.DataFrame({
        "k": ["1", "2", "all"], "acc_sae": [0.7, 0.8, 0.9], "acc_raw": [0.6, 0.7, 0.9], "diff": [0.1, 0.1, 0.0],
        "diff_lo": [0.0, 0.0, -0.1], "diff_hi": [0.2, 0.2, 0.1], "n_test": [70, 70, 70], "layer": [1, 1, 1],
        "dictionary": ["topk"] * 3, "task": ["d: label 1 vs 0"] * 3})})
    ai = _artefact(tmp_path, "autointerp", "a" * 20, lab, {}, {"summary.json": {"methods": ["token"], "confidence": 0.95,
        "summary": [{"method": "token", "control": c, "task": t, "group": "all", "accuracy": v, "lo": v - 0.05,
                     "hi": v + 0.05, "n_latents": 32, "n_items": 640}
                    for c, t, v in (("none", "detection", 0.6), ("none", "fuzzing", 0.58), ("gap", "detection", 0.1),
                                    ("shuffled", "detection", 0.5))]}})
    conf = {"seed": 3, "presets": {"p": {"model": {"source": "embedded", "n_layers": 2, "d_model": 32,
                                                   "train_dataset": "d"}}},
            "datasets": {"d": {"source": "synthetic", "seed": 0, "n_docs": 10}}}
    refs = [{"eval": "recon", "range": [0.79, 0.81], "source": "a paper"}]
    df = ledger.ledger_rows({"e0": recon, "e1": probe, "e2": ai}, {"d0": dct}, conf, refs)
    assert list(df.columns) == ledger.COLUMNS and len(df) == 3
    by = df.set_index("eval")
    assert by.loc["recon", "value"] == 0.8 and by.loc["recon", "verdict"] == "reproduced"
    assert by.loc["recon", "reference"] == "[0.79, 0.81] a paper" and by.loc["recon", "tokens"] == 8000
    assert by.loc["probe", "metric"] == "probe_top1_acc" and by.loc["probe", "value"] == 0.7
    assert by.loc["probe", "lo"] == pytest.approx(wilson_interval(0.7, 70)[0]) and by.loc["probe", "verdict"] == "novel"
    assert by.loc["autointerp", "value"] == 0.6 and "shuffled explanations +0.1" in by.loc["autointerp", "note"]
    for r in df.itertuples():   # the dictionary's provenance and the recon node's measured L0 on every row
        assert (r.d_sae, r.k, r.l0, r.hook, r.seed) == (512, 32, 31.5, "blocks.1.hook_resid_post", 3)
        assert r.code_commit == "abc123def456" and r.date == "2026-12-06" and r.id.endswith(":p/d/L1/topk")
    md = ledger.markdown(df)
    assert md.count("\n| ") == 1 + 3 and "reproduced ([0.79, 0.81] a paper)" in md
    # The rows without a reference (pandas >= 3 stores a string column's missing cells as NaN, in memory and read
    # back from Parquet) name none, and no cell of the published table says "nan".
    df.to_parquet(tmp_path / "ledger.parquet", index=False)
    for d in (df, pd.read_parquet(tmp_path / "ledger.parquet")):
        md = ledger.markdown(d)
        assert "nan" not in md.lower() and md.count("| novel |") == 2, md
