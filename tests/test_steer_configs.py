"""The paper-scale steering configs (README "Steering"): seed 002 on Qwen3-4B-Instruct-2507 and seed 000's
ctrl-steer-v2 on gemma-2-2b validate and plan one steer node with the setup the seeds describe; the gemma
config is refused until bias_in_bios is pinned. (Their commands, as written, run in test_slurm_profile.)"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from saeflow.models import hf
from saeflow.workflow import config as cfg
from saeflow.workflow.plan import build_plan

ROOT = Path(__file__).resolve().parents[1]
# What a user passes with --config: the one pin the shipped file cannot carry (README "Steering").
USER_PINS = {"config/steer_gemma.yaml": {"bias-in-bios": "0" * 40}}


def load(rel: str) -> dict:
    raw = cfg.load_config_file(ROOT / rel)
    for ds, rev in USER_PINS.get(rel, {}).items():
        raw["datasets"][ds]["revision"] = rev
    return cfg.validate(raw)


def _steer_node(conf):
    nodes = [n for n in build_plan(conf, ROOT).nodes.values() if n.step == "steer"]
    assert len(nodes) == 1
    return nodes[0]


def _same_model(model: dict, paper: str):
    ref = hf.PAPER_MODELS[paper]
    for k in ("hf_id", "n_layers", "d_model"):
        assert model[k] == ref[k], k
    assert (model.get("tl_name") or model["hf_id"]) == ref["tl_name"]


def test_qwen3_config_is_seed_002s_setup():
    conf = load("config/steer_qwen3.yaml")
    preset = conf["presets"]["qwen3-4b"]
    _same_model(preset["model"], "qwen3-4b")
    assert preset["model"]["hf_id"] == "Qwen/Qwen3-4B-Instruct-2507" and len(preset["model"]["revision"]) == 40
    d = conf["dictionaries"][preset["dictionaries"][0]]
    assert d["kind"] == "saelens-relu" and d["d_sae"] == 4096 and "k" not in d
    mix = conf["datasets"]["code-vs-math"]
    assert mix["source"] == "mixture" and mix["parts"] == ["code-python", "gsm8k"]
    node = _steer_node(conf)
    assert node.params["layer"] == 18 and node.params["chat_template"] is True and node.params["labels"] == [0, 1]
    assert node.labels["dataset"] == "code-vs-math" and node.params["device"] == "cuda"
    plan = build_plan(conf, ROOT)
    train = [n for n in plan.nodes.values() if n.step == "train_dict"]
    assert len(train) == 1 and train[0].params["d_sae"] == 4096 and train[0].params["hook_in"] == "blocks.18.hook_resid_post"
    corpus = {n.labels["dataset"]: n for n in plan.nodes.values() if n.step == "corpus"}
    assert set(plan.input_paths(corpus["code-vs-math"].key)) == {"part_code-python", "part_gsm8k"}


def test_gemma_config_is_ctrl_steer_v2_and_needs_the_bias_in_bios_pin():
    raw = cfg.load_config_file(ROOT / "config/steer_gemma.yaml")
    with pytest.raises(cfg.ConfigError, match=r"^config key 'datasets.bias-in-bios': 'revision' is a required"):
        cfg.validate(copy.deepcopy(raw))
    conf = load("config/steer_gemma.yaml")
    _same_model(conf["presets"]["gemma-2-2b"]["model"], "gemma-2-2b")
    paper = cfg.load_config_file(ROOT / "config/paper.yaml")
    assert conf["presets"]["gemma-2-2b"]["model"]["revision"] == paper["presets"]["gemma-2-2b"]["model"]["revision"]
    gs = conf["dictionaries"]["gemma-scope-16k"]
    assert gs["release"] == paper["dictionaries"]["gemma-scope-16k"]["release"]
    assert gs["revision"] == paper["dictionaries"]["gemma-scope-16k"]["revision"]
    assert conf["datasets"]["bias-in-bios"]["label_column"] == "profession"
    node = _steer_node(conf)
    p = node.params
    assert p["layer"] == 12 and p["labels"] == [19, 21] and p["alphas"] == [0.5, 1, 2, 3, 4]
    assert p["fluency_cap"] == 1.5 and p["chat_template"] is False


MIXTURE_CONFIG = """
store: data/store
figures_dir: figures
seed: 0
datasets:
  synthetic: {source: synthetic, n_docs: 120, doc_len: 80, seed: 0, lag: 3, n_topics: 3, n_filler: 48, n_topic_words: 8}
  code: {source: stdlib, packages: [json, email, urllib, wsgiref], max_bytes: 4000}
  prose-vs-code: {source: mixture, parts: [synthetic, code], max_docs_per_part: 60}
presets:
  t:
    model: {source: embedded, train_dataset: synthetic, vocab_size: 400, n_layers: 2, d_model: 32, n_heads: 2,
            d_mlp: 64, steps: 20, batch_size: 8, lr: 0.003}
    layers: [1]
    datasets: [prose-vs-code]
    dictionaries: [relu]
windows: {ctx_len: 24, n_train: 150, n_eval: 32}
cache: {shard_tokens: 1000, batch_size: 32}
dictionaries:
  relu: {kind: saelens-relu, d_sae: 100, l1_coefficient: 1.0, train_tokens: 4096, batch_size: 256}
recon: {batch_size: 8, n_resamples: 100}
steer: {dictionary: relu, labels: [1, 0], alphas: [1, 4], n_prompts: 8, prompt_len: 8, max_new_tokens: 6,
        n_samples: 2, n_resamples: 100}
publish: {}
"""


def test_mixture_contrast_with_a_relu_sae_steers_through_snakemake(tmp_path):
    """A mixture (synthetic prose, label 0; stdlib code, label 1) as a labelled contrast, steered towards
    code with a saelens-relu SAE whose width is given as d_sae: the corpus is labelled by part, the steer
    node names the parts and runs every direction, and the trained dictionary is sae-lens' ReLU SAE."""
    import subprocess
    import sys

    import pandas as pd
    from test_workflow import ENV, copy_workflow

    from saeflow.cli import load_plan
    from saeflow.dictionaries import formats
    from saeflow.workflow import store

    wd = copy_workflow(tmp_path / "wd")
    (wd / "mix.yaml").write_text(MIXTURE_CONFIG)
    plan = load_plan([str(wd / "mix.yaml")], wd)
    steer = next(n for n in plan.nodes.values() if n.step == "steer")
    res = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", f"{steer.path}/manifest.json",
                          "--configfile", "mix.yaml"], cwd=wd, env=ENV, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    corpus = next(n for n in plan.nodes.values() if n.step == "corpus" and n.labels["dataset"] == "prose-vs-code")
    docs = pd.read_parquet(wd / corpus.path / "docs.parquet")
    chars = docs.groupby("label")["text"].apply(lambda t: t.str.len().sum())
    assert (docs["label"] == 0).sum() == 60 and (docs["label"] == 1).sum() >= 2  # balanced by characters:
    assert chars[0] <= chars[1] <= chars[0] + 4000                              # code cut to the prose's size
    assert (docs["source"].str.startswith("code/") == (docs["label"] == 1)).all()
    summary = store.read_json(wd / steer.path / "summary.json")
    assert summary["contrast"]["positive"] == "label 1 (code)" and summary["contrast"]["negative"] == "label 0 (synthetic)"
    assert set(summary["directions"]) == {"latent", "diff_of_means", "random_vector", "random_latent"}
    table = pd.read_parquet(wd / steer.path / "steering.parquet")
    assert set(table["alpha"]) == {0.0, 1.0, 4.0} and {"success", "perplexity", "logit_margin"} <= set(table["metric"])
    dict_node = next(n for n in plan.nodes.values() if n.step == "train_dict")
    sae = formats.load_saelens(wd / dict_node.path / "saelens")
    assert type(sae).__name__ == "StandardSAE" and sae.cfg.d_sae == 100
