"""The randomized-model control (saeflow.models.controls): a seeded TransformerLens re-initialisation, loaded
from a `randomize_lm` artefact by lm.load_model, expanded from `controls: [randomized]` into its own preset
and planned as a full preset of its own on the same windows."""
import copy
import json
import math

import pytest
import torch
import yaml

from saeflow.data import corpus, tokenizer, windows
from saeflow.models import controls, lm
from saeflow.workflow import config as cfg
from saeflow.workflow.plan import build_plan


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small embedded LM trained on planted synthetic text, saved as train_lm saves it, and its windows."""
    tmp = tmp_path_factory.mktemp("ctrl")
    docs, _ = corpus.synthetic_documents(60, 60, seed=1, n_filler=32, n_topic_words=4, n_topics=2)
    tokenizer.train_bpe([d.text for d in docs], 400, tmp / "tok")
    tok = tokenizer.load_tokenizer(tmp / "tok")
    w = windows.cut_windows(tokenizer.encode_documents(tok, [d.text for d in docs]), 16, 200, 0,
                            tok.bos_token_id)["tokens"]
    arch = {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64, "act_fn": "gelu", "n_ctx": 16, "seed": 0}
    torch.manual_seed(0)
    model = lm.build_model(arch, tmp / "tok")
    lm.train_lm(model, w[32:], w[:32], steps=60, batch_size=16, lr=3e-3, seed=0, progress=False)
    lm.save_model(model, tmp / "m", arch)
    return tmp, lm.load_model(tmp / "m"), w


def test_randomized_is_a_seeded_fresh_initialisation(trained):
    _, model, _ = trained
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a = controls.randomized(model, 3)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG is left as it was
    b, c = controls.randomized(model, 3), controls.randomized(model, 4)
    sa, sb, sc, s0 = a.state_dict(), b.state_dict(), c.state_dict(), model.state_dict()
    assert sa.keys() == s0.keys() and all(sa[k].shape == s0[k].shape for k in s0)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)                     # same seed, same weights
    weights = [k for k in sa if k.split(".")[-1].startswith("W_")]
    assert all(not torch.equal(sa[k], sc[k]) for k in weights)           # another seed, other weights
    assert all(not torch.equal(sa[k], s0[k]) for k in weights)           # nothing of the trained model left
    for k in sa:
        leaf = k.split(".")[-1]
        if leaf.startswith("b_") or (leaf == "b" and ".ln" in k):
            assert torch.count_nonzero(sa[k]) == 0, k
        elif leaf == "w" and ".ln" in k:
            assert torch.all(sa[k] == 1), k
    std = torch.cat([sa[k].flatten() for k in weights if "blocks" in k]).std()
    assert float(std) == pytest.approx(model.cfg.initializer_range, rel=0.1)
    assert a.tokenizer is model.tokenizer and not a.training


def test_a_randomize_lm_directory_loads_re_initialised_and_predicts_no_better_than_unigram(trained, tmp_path):
    tmp, model, w = trained
    import shutil

    shutil.copytree(tmp / "m", tmp_path / "model")
    (tmp_path / "model" / controls.RANDOMIZED_FILE).write_text(json.dumps({"seed": 7, "init": controls.INIT}))
    loaded = lm.load_model(tmp_path / "model")
    ref = controls.randomized(model, 7)
    x = torch.as_tensor(w[:4])
    torch.testing.assert_close(loaded(x), ref(x), rtol=0, atol=0)
    # the science of the control: the randomized model predicts about uniformly (loss near log2 vocab), worse
    # than the unigram model of the tokens it is scored on and than the trained model
    ids = torch.as_tensor(w[:32])
    counts = torch.bincount(ids[:, 1:].flatten(), minlength=model.cfg.d_vocab).double()
    pr = counts[counts > 0] / counts.sum()
    unigram_bits = float(-(pr * pr.log2()).sum())
    rand_bits = lm.eval_loss(loaded, w[:32]) / math.log(2)
    assert unigram_bits < rand_bits and lm.eval_loss(model, w[:32]) / math.log(2) < rand_bits - 1
    assert rand_bits == pytest.approx(math.log2(model.cfg.d_vocab), abs=0.5)


def _tiny_config(**preset_extra) -> dict:
    from pathlib import Path

    conf = yaml.safe_load((Path(__file__).parent / "configs" / "tiny.yaml").read_text())
    conf["presets"]["t"].update(preset_extra)
    return conf


def test_controls_expand_into_a_preset_of_their_own():
    conf = cfg.validate(_tiny_config(controls=["randomized"]))
    assert list(conf["presets"]) == ["t", "t-randomized"]
    derived = conf["presets"]["t-randomized"]
    assert derived["control"] == {"kind": "randomized", "of": "t", "seed": conf["seed"]}
    assert "controls" not in derived and derived["model"] == conf["presets"]["t"]["model"]
    again = cfg.validate(copy.deepcopy(conf))  # a validated config validates unchanged
    assert again == conf


def test_an_edited_base_rebuilds_its_control_and_the_init_names_agree():
    conf = cfg.validate(_tiny_config(controls=["randomized"]))
    conf["presets"]["t"]["layers"] = [0, 1]
    conf["seed"] = 3
    again = cfg.validate(conf)
    assert again["presets"]["t-randomized"]["layers"] == [0, 1]
    assert again["presets"]["t-randomized"]["control"]["seed"] == 3
    assert controls.INIT == cfg.RANDOMIZED_INIT


def test_control_preset_name_taken_is_refused():
    conf = _tiny_config(controls=["randomized"])
    conf["presets"]["t-randomized"] = copy.deepcopy(conf["presets"]["t"])
    del conf["presets"]["t-randomized"]["controls"]
    with pytest.raises(cfg.ConfigError, match=r"presets\.t-randomized"):
        cfg.validate(conf)


def test_unknown_control_is_refused():
    with pytest.raises(cfg.ConfigError, match=r"presets\.t\.controls"):
        cfg.validate(_tiny_config(controls=["shuffled"]))


def test_control_preset_plans_every_node_on_the_randomized_model(tmp_path):
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    plan = build_plan(cfg.validate(_tiny_config(controls=["randomized"])), root)
    by = {}
    for n in plan.nodes.values():
        by.setdefault((n.step, n.labels.get("preset")), []).append(n)
    (rand,) = by[("randomize_lm", "t-randomized")]
    (base_lm,) = by[("train_lm", "t")]
    assert rand.upstream["lm"] == base_lm.key and rand.params["device"] == "cpu"
    # tokenizer, windows and LM are the base preset's own nodes; everything that reads the model is new
    assert ("train_lm", "t-randomized") not in by and ("windows", "t-randomized") not in by
    for step in ("cache_activations", "train_dict", "recon", "entropy_vs_depth", "h_pos", "probe", "circuit",
                 "publish"):
        base, ctrl = by[(step, "t")], by[(step, "t-randomized")]
        assert len(base) == len(ctrl) and not {n.key for n in base} & {n.key for n in ctrl}, step
    (cache,) = by[("cache_activations", "t-randomized")]
    assert cache.upstream["lm"] == rand.key
    # the control's own head-to-head of its dictionaries, and each dictionary against its trained counterpart
    kinds = {n.params["kind"]: n for n in by[("compare", "t-randomized")]}
    assert set(kinds) == {"dictionaries", "control"} and [n.params["kind"] for n in by[("compare", "t")]] == ["dictionaries"]
    ctrl = kinds["control"]
    arms = ctrl.params["arms"]
    assert [(a["preset"], a["dictionary"]) for a in arms[:2]] == [("t", "topk"), ("t-randomized", "topk")]
    assert ctrl.params["pairs"] == [[0, 1], [2, 3], [4, 5]]
    recon_of = {(n.labels["preset"], n.labels["dictionary"], n.labels["layer"]): n.key for n in plan.nodes.values()
                if n.step == "recon"}
    assert ctrl.upstream["recon_L1_a0"] == recon_of[("t", "topk", 1)]
    assert ctrl.upstream["recon_L1_a1"] == recon_of[("t-randomized", "topk", 1)]
    assert {"probe_a0", "probe_a1", "h_pos_a0", "h_pos_a1", "probe_a4", "probe_a5"} <= set(ctrl.upstream)
    assert "h_pos_a2" not in ctrl.upstream and "probe_a2" not in ctrl.upstream  # the transcoder: neither
    for fig in ("entropy_vs_depth", "control", "compare"):
        assert f"figures/{fig}__t-randomized__synthetic.png" in plan.exports


def test_with_the_default_seeds_the_control_is_the_model_at_step_zero(trained):
    tmp, model, _ = trained
    arch = {"n_layers": 1, "d_model": 32, "n_heads": 2, "d_mlp": 64, "act_fn": "gelu", "n_ctx": 16, "seed": 0}
    fresh, ctrl = lm.build_model(arch, tmp / "tok").state_dict(), controls.randomized(model, 0).state_dict()
    assert all(torch.equal(fresh[k], ctrl[k]) for k in fresh)
