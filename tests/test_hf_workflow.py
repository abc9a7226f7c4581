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
