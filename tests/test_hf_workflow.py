"""A paper-shaped preset through the whole DAG, offline: a random tiny Gemma-2 saved as a Hugging Face model
(loaded by the paper presets' path: TransformerLens with hf_model= / tokenizer=, saeflow.models.hf.load_hooked) and
three pretrained dictionaries, one per format (sae-lens JumpReLU, sparsify TopK, dictionary_learning ReLU),
loaded by their real loaders from local copies -> cache -> fidelity-checked conversion -> recon -> influence
-> auto-interp with a local Hugging Face chat model as explainer and scorer (a random tiny Qwen3) -> feature pages
-> figures -> publish."""
from __future__ import annotations

import time

import pytest
import yaml
from test_workflow import CONFIG, copy_workflow, planned, run

from saeflow.dictionaries import tiny
from saeflow.models import random_models
from saeflow.workflow import store

pytestmark = pytest.mark.workflow
LAYER = 1


def bios_like(root):
    """Parquet train and test splits with bias_in_bios' columns: every profession of class set 1 (and one more)
    has its own words, each gender half of it."""
    import numpy as np
    import pandas as pd

    g = np.random.default_rng(0)
    words = {c: [f"w{c}x{i}" for i in range(4)] for c in (0, 1, 2, 6, 9, 13)}
    for split, n in (("train", 30), ("test", 14)):
        rows = [{"hard_text": " ".join(g.choice(words[c], 6)) + " and more words", "profession": c, "gender": s}
                for c in words for s in (0, 1) for _ in range(n)]
        (root / "data").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(root / "data" / f"{split}-00000-of-00001.parquet", index=False)
    return root


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("hfwf"))
    assets = tmp_path_factory.mktemp("assets")
    spec = random_models.random_model("gemma2", assets / "model", size="tiny", seed=0)
    llm = random_models.random_model("qwen3", assets / "llm", size="tiny", seed=0)
    llm = {"kind": "hf", "hf_id": llm["hf_id"], "revision": llm["revision"], "local_dir": llm["local_dir"],
           "dtype": "float32", "batch_size": 16, "max_new_tokens": 8}
    hook = f"blocks.{LAYER}.hook_resid_post"
    d_in = spec["d_model"]
    tiny.write_tiny("saelens", assets / "sl", LAYER, d_in, 4 * d_in, hook, seed=1, architecture="jumprelu")
    tiny.write_tiny("sparsify", assets / "sp", LAYER, d_in, 4 * d_in, hook, seed=2, k=8)
    tiny.write_tiny("dictionary_learning", assets / "dl", LAYER, d_in, 4 * d_in, hook, seed=3)
    cfg = yaml.safe_load((wd / CONFIG).read_text())
    cfg["presets"] = {"g": {
        "model": {"source": "hf", "hf_id": spec["hf_id"], "revision": spec["revision"][:40], "local_dir": spec["local_dir"],
                  "tl_name": spec["tl_name"], "n_layers": spec["n_layers"], "d_model": d_in, "processing": "none"},
        "layers": [LAYER], "datasets": ["synthetic"], "dictionaries": ["sl", "sp", "dl"], "influence_dictionary": "sl"}}
    cfg["dictionaries"] = {
        "sl": {"kind": "pretrained", "format": "saelens", "release": "test/sl", "id": "blocks.{layer}.hook_resid_post",
               "local_dir": str(assets / "sl")},
        "sp": {"kind": "pretrained", "format": "sparsify", "release": "test/sp", "id": "layers.{layer}",
               "local_dir": str(assets / "sp")},
        "dl": {"kind": "pretrained", "format": "dictionary_learning", "release": "test/dl",
               "id": "resid_out_layer{layer}/10_32768", "local_dir": str(assets / "dl"),
               "gates": {"max_fvu": 1e-9, "max_dead_frac": 1.0, "fail": False}}}  # a gate that must fail, recorded
    cfg["influence"].pop("dictionary", None)
    for section in ("probe", "circuit", "compare", "autocorr", "geometry"):  # covered by the embedded workflow test; keeps CI short
        cfg.pop(section)
    cfg["autointerp"] = {**cfg["autointerp"], "dictionaries": ["sl"], "explainer": llm, "scorer": llm}
    # SAEBench's protocol on a local copy shaped like LabHC/bias_in_bios (its class set 1, balanced by gender)
    cfg["saebench"] = {"dictionaries": ["sl"], "train_size": 40, "test_size": 20, "context_length": 16, "n_resamples": 100,
                       "tasks": [{"name": "LabHC/bias_in_bios_class_set1", "repo": "LabHC/bias_in_bios",
                                  "revision": "local-copy", "local_dir": str(bios_like(assets / "bios")),
                                  "text_column": "hard_text", "label_column": "profession", "balance_column": "gender"}]}
    cfg["inspect"] = {**cfg["inspect"], "dictionaries": ["sl", "sp"]}
    (wd / CONFIG).write_text(yaml.safe_dump(cfg))
    t0 = time.time()
    run(wd)
    print(f"hf tiny DAG: {time.time() - t0:.1f} s")
    return wd


def test_paper_shaped_preset_runs_end_to_end(wd):
    steps = {a.parent.name for a in store.iter_artefacts(wd / "data/store")}
    assert {"hf_tokenizer", "hf_model", "cache_activations", "load_dict", "recon", "entropy_vs_depth", "h_pos", "publish"} <= steps
    assert not {"tokenizer", "train_lm", "train_dict"} & steps  # nothing is trained for a hub preset
    model = store.read_manifest(next((wd / "data/store/hf_model").iterdir()))
    assert model["official_tl_name"] == "google/gemma-2-2b" and model["facts"]["architecture"] == "Gemma2ForCausalLM"
    tok = store.read_manifest(next((wd / "data/store/hf_tokenizer").iterdir()))
    assert tok["bos_id"] is not None
    formats = set()
    for d in (wd / "data/store/load_dict").iterdir():
        m = store.read_manifest(d)
        formats.add(m["params"]["format"])
        assert m["fidelity"]["passed"] and m["fidelity"]["n_differing_tokens"] == 0, m["fidelity"]
        assert m["describe"]["d_in"] == m["params"]["d_in"]
        assert "local_dir" not in m["params"]  # where the copy lives is not part of the key
        # Pretrained dictionaries are gated by their config's gates, like trained ones.
        assert m["gates"]["max_fvu"] == m["params"]["gates"]["max_fvu"] and m["gates"]["fvu"] >= 0
        if m["params"]["format"] == "dictionary_learning":
            assert m["gates"]["passed"] is False and m["gates"]["max_fvu"] == 1e-9
    assert formats == {"saelens", "sparsify", "dictionary_learning"}
    for d in (wd / "data/store/recon").iterdir():
        metrics = store.read_json(d / "metrics.json")
        assert metrics["n_tokens"] > 0 and metrics["l0"]["value"] > 0
    assert (wd / "figures/entropy_vs_depth__g__synthetic.png").stat().st_size > 10_000
    assert store.verify_store(wd / "data/store") == {}
    assert planned(wd) == {}


def test_autointerp_with_a_local_chat_model_and_the_pages(wd):
    """The hf explainer and scorer run from a local copy (never part of the key), beside the token baseline, with
    the prompts recorded; the pages of a hub preset's pretrained dictionaries are written."""
    (ai,) = [store.read_manifest(d) for d in (wd / "data/store/autointerp").iterdir()]
    methods = ai["autointerp"]["methods"]
    assert methods == ["hf:saeflow-random/qwen3-tiny", "token"], methods
    assert "local_dir" not in ai["params"]["explainer"] and "local_dir" not in ai["params"]["scorer"]
    assert set(ai["prompts"]) == {"explain", "detect", "fuzz"} and "<<this>>" in ai["prompts"]["explain"]["system"]
    art = wd / "data/store/autointerp" / ai["key"]
    assert store.read_json(art / "prompts.json") == ai["prompts"]
    for r in ai["autointerp"]["summary"]:
        assert (-1 if r["control"] == "gap" else 0) <= r["lo"] <= r["accuracy"] <= r["hi"] <= 1
    assert {r["method"] for r in ai["autointerp"]["summary"]} == set(methods)
    pages = sorted(d.name for d in (next((wd / "data/g/synthetic").glob("2*")) / "inspect").iterdir())
    assert pages == [f"sl_layer{LAYER}", f"sp_layer{LAYER}"]


def test_saebench_protocol_on_a_bias_in_bios_shaped_local_copy(wd):
    """The Hugging Face path of the saebench node: SAEBench's class list of the task's name, items balanced by gender,
    text beginnings, one-vs-rest probes of every class and SAEBench's metric names."""
    import pandas as pd

    (art,) = list((wd / "data/store/saebench").iterdir())
    s = store.read_json(art / "summary.json")
    assert s["task"] == "LabHC/bias_in_bios_class_set1" and s["classes"] == [0, 1, 2, 6, 9]
    assert (s["train_size"], s["test_size"]) == (40, 20)
    (r,) = s["results"]
    assert {"sae_top_1_test_accuracy", "llm_top_1_test_accuracy", "sae_test_accuracy", "llm_test_accuracy"} <= set(r)
    t = pd.read_parquet(art / "saebench.parquet")
    assert set(t["class"]) == {0, 1, 2, 6, 9} and (t["n_train"] == 40).all() and (t["n_test"] == 20).all()
    items = store.read_json(art / "items.json")
    assert all(len(v) == 20 for v in items["train"].values()) and items["unit"] == "text beginnings, 16 tokens"
    m = store.read_manifest(art)
    assert "local_dir" not in m["params"]["task"] and m["inputs"] == {"hf": "LabHC/bias_in_bios@local-copy"}
