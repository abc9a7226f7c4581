"""Every config mistake is refused at parse time with one line naming the dotted key and what is allowed.

`saeflow.workflow.config.validate` is the one check the Snakefile and the CLI run; these tests mutate the tiny test
config (or the default one) into configs that used to pass, or that failed only inside a job, and check
the one-line message. The last tests go through the real Snakemake CLI and `saeflow status`.
"""
import copy
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from saeflow import cli
from saeflow.workflow import config as cfg

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
TINY = yaml.safe_load((ROOT / "tests" / "configs" / "tiny.yaml").read_text())
MISSING_DIR = "/nonexistent/saeflow-local-copy"
DELETE = object()


def _set(path: str, value):
    """Mutation: set (or delete) the value at a dotted path; list indices are integers."""
    def mutate(c):
        *parents, last = path.split(".")
        d = c
        for p in parents:
            d = d[int(p)] if isinstance(d, list) else d[p]
        if value is DELETE:
            del d[last]
        elif isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = copy.deepcopy(value)
    return mutate


def _all(*mutations):
    def mutate(c):
        for m in mutations:
            m(c)
    return mutate


# A Hugging Face dataset, model and pretrained dictionary added to the tiny config (planning reads no hub).
HF_DATASET = {"source": "hf", "repo": "someone/corpus", "revision": "v1.0", "split": "train"}
HF_MODEL = {"source": "hf", "hf_id": "someone/model", "revision": "0" * 40, "n_layers": 2, "d_model": 32}
PRETRAINED = {"kind": "pretrained", "format": "saelens", "release": "some-release", "id": "blocks.{layer}.hook_resid_post"}


def _with_hf_dataset(**fields):
    return _all(_set("datasets.wiki", {**HF_DATASET, **fields}), _set("presets.t.datasets", ["synthetic", "wiki"]))


def _with_hf_preset(**model_fields):
    return _set("presets.h", {"model": {**HF_MODEL, **model_fields}, "layers": [1], "datasets": ["synthetic"],
                              "dictionaries": ["topk"]})


def _with_pretrained(**fields):
    return _all(_set("dictionaries.pre", {**PRETRAINED, **fields}),
                _set("presets.t.dictionaries", ["topk", "transcoder", "saelens-topk", "pre"]))


# (id, base config, mutation, dotted key the message must name)
BAD = [
    # outputs planned at the filesystem root, or at a path the plan would concatenate oddly
    ("store-empty", TINY, _set("store", ""), "store"),
    ("store-root", TINY, _set("store", "/"), "store"),
    ("store-dot", TINY, _set("store", "."), "store"),
    ("store-trailing-slash", TINY, _set("store", "data/store/"), "store"),
    ("figures-empty", TINY, _set("figures_dir", ""), "figures_dir"),
    ("figures-root", DEFAULT, _set("figures_dir", "/"), "figures_dir"),
    # floats (even with a zero fraction) and booleans are not integers; booleans are not numbers
    ("float-n_train", TINY, _set("windows.n_train", 150.0), "windows.n_train"),
    ("float-train_tokens", TINY, _set("dictionaries.topk.train_tokens", yaml.safe_load("4.096e+3")),
     "dictionaries.topk.train_tokens"),
    ("float-layer", TINY, _set("presets.t.layers", [1.0]), "presets.t.layers.0"),
    ("float-d_model", DEFAULT, _set("presets.tiny-synth.model.d_model", 64.0), "presets.tiny-synth.model.d_model"),
    ("bool-seed", TINY, _set("seed", True), "seed"),
    ("bool-threshold", TINY, _set("presets.t.threshold", True), "presets.t.threshold"),
    # non-finite numbers pass every `minimum`
    ("nan-threshold", TINY, _set("presets.t.threshold", float("nan")), "presets.t.threshold"),
    ("inf-confidence", TINY, _set("recon.confidence", float("inf")), "recon.confidence"),
    ("neg-inf-p_lag", TINY, _set("datasets.synthetic.p_lag", float("-inf")), "datasets.synthetic.p_lag"),
    ("nan-in-list", TINY, _set("influence.ctx_lens", [8, float("nan")]), "influence.ctx_lens.1"),
    # cross-field sizes found only inside a job, or silently reduced
    ("probe-n_train-over-windows", TINY, _set("probe.n_train", 151), "probe.n_train"),
    ("train_tokens-under-batch", TINY, _set("dictionaries.topk.train_tokens", 255), "dictionaries.topk.train_tokens"),
    ("batch-over-train_tokens", TINY, _set("dictionaries.saelens-topk.batch_size", 8192),
     "dictionaries.saelens-topk.train_tokens"),
    ("ctx_len-over-doc_len", TINY, _set("datasets.synthetic.doc_len", 22), "windows.ctx_len"),
    ("default-ctx_len-over-doc_len", DEFAULT, _set("windows.ctx_len", 302), "windows.ctx_len"),
    ("autocorr-n_docs-over-windows", TINY, _set("autocorr.n_docs", 151), "autocorr.n_docs"),
    ("autocorr-max_lag-over-window", TINY, _set("autocorr.max_lag", 23), "autocorr.max_lag"),
    ("probe-k-over-d_sae", TINY, _set("probe.ks", [1, 129]), "probe.ks"),
    ("probe-ks-repeated", TINY, _set("probe.ks", [1, 2, 2]), "probe.ks"),
    ("probe-dictionaries-repeated", TINY, _set("probe.dictionaries", ["topk", "topk"]), "probe.dictionaries"),
    # steering
    ("steer-transcoder", TINY, _set("steer", {"dictionary": "transcoder"}), "steer.dictionary"),
    ("steer-unknown-dictionary", TINY, _set("steer", {"dictionary": "nope"}), "steer.dictionary"),
    ("steer-layer-not-analysed", TINY, _set("steer", {"dictionary": "topk", "layer": 0}), "steer.layer"),
    ("steer-layer-word", TINY, _set("steer", {"dictionary": "topk", "layer": "middle"}), "steer.layer"),
    ("steer-n_contrast-over-windows", TINY, _set("steer", {"dictionary": "topk", "n_contrast": 151}), "steer.n_contrast"),
    ("steer-prompt-longer-than-windows", TINY, _set("steer", {"dictionary": "topk", "prompt_len": 25}), "steer.prompt_len"),
    ("steer-fluency-cap-not-above-1", TINY, _set("steer", {"dictionary": "topk", "fluency_cap": 1}), "steer.fluency_cap"),
    ("steer-alphas-empty", TINY, _set("steer", {"dictionary": "topk", "alphas": []}), "steer.alphas"),
    # circuits
    ("circuit-transcoder", TINY, _set("circuit", {"dictionary": "transcoder"}), "circuit.dictionary"),
    ("circuit-unknown-dictionary", TINY, _set("circuit", {"dictionary": "nope"}), "circuit.dictionary"),
    ("circuit-n_train-over-windows", TINY, _set("circuit", {"dictionary": "topk", "n_train": 151}), "circuit.n_train"),
    ("circuit-k-leaves-no-null", TINY, _set("circuit", {"dictionary": "topk", "ks": [1, 65], "n_train": 100}), "circuit.ks"),
    ("circuit-mode-unknown", TINY, _set("circuit", {"dictionary": "topk", "ablation_mode": "resample"}),
     "circuit.ablation_mode"),
    ("steer-labels-one", TINY, _set("steer", {"dictionary": "topk", "labels": [0]}), "steer.labels"),
    # saelens-relu: sparsity from its L1 coefficient, not k
    ("relu-with-k", TINY, _set("dictionaries.relu", {"kind": "saelens-relu", "k": 4, "l1_coefficient": 1.0}),
     "dictionaries.relu.k"),
    ("relu-without-l1", TINY, _set("dictionaries.relu", {"kind": "saelens-relu"}), "dictionaries.relu.l1_coefficient"),
    ("topk-with-l1", TINY, _set("dictionaries.topk.l1_coefficient", 1.0), "dictionaries.topk.l1_coefficient"),
    # mixtures name other, plain datasets
    ("mixture-unknown-part", TINY, _set("datasets.mix", {"source": "mixture", "parts": ["synthetic", "nope"]}),
     "datasets.mix.parts"),
    ("mixture-of-mixture", TINY, _all(_set("datasets.mix", {"source": "mixture", "parts": ["synthetic", "synthetic2"]}),
                                      _set("datasets.synthetic2", {"source": "synthetic"}),
                                      _set("datasets.mix2", {"source": "mixture", "parts": ["synthetic", "mix"]})),
     "datasets.mix2.parts"),
    ("mixture-part-local_dir-missing", TINY, _all(_set("datasets.wiki", {**HF_DATASET, "local_dir": MISSING_DIR}),
                                                  _set("datasets.mix", {"source": "mixture", "parts": ["synthetic", "wiki"]}),
                                                  _set("presets.t.datasets", ["synthetic", "mix"])),
     "datasets.wiki.local_dir"),
    ("mixture-one-part", TINY, _set("datasets.mix", {"source": "mixture", "parts": ["synthetic"]}), "datasets.mix.parts"),
    ("layers-repeated", TINY, _set("presets.t.layers", [1, 1]), "presets.t.layers"),
    ("k-zero", TINY, _set("dictionaries.transcoder.k", 0), "dictionaries.transcoder.k"),
    ("hf-preset-k-over-d_sae", TINY, _all(_with_hf_preset(d_model=2), _set("presets.h.layers", [0])),
     "dictionaries.topk.k"),
    # local copies that do not exist on this machine
    ("dataset-local_dir-missing", TINY, _with_hf_dataset(local_dir=MISSING_DIR), "datasets.wiki.local_dir"),
    ("model-local_dir-missing", TINY, _with_hf_preset(local_dir=MISSING_DIR), "presets.h.model.local_dir"),
    ("dict-local_dir-missing", TINY, _with_pretrained(local_dir=MISSING_DIR), "dictionaries.pre.local_dir"),
    ("dataset-local_dir-empty", TINY, _with_hf_dataset(local_dir=""), "datasets.wiki.local_dir"),
    # synthetic corpus parameters that fail in the corpus job or plant nothing
    ("p_lag-plus-p_topic-over-1", TINY, _all(_set("datasets.synthetic.p_lag", 0.7), _set("datasets.synthetic.p_topic", 0.5)),
     "datasets.synthetic.p_topic"),
    ("lag-not-below-doc_len", TINY, _set("datasets.synthetic.lag", 80), "datasets.synthetic.lag"),
    ("n_docs-negative", TINY, _set("datasets.synthetic.n_docs", -5), "datasets.synthetic.n_docs"),
    ("shard_tokens-zero", TINY, _set("cache.shard_tokens", 0), "cache.shard_tokens"),
    # Hugging Face and pretrained entries
    ("hf-revision-branch", TINY, _with_hf_dataset(revision="main"), "datasets.wiki.revision"),
    ("hf-split-empty", TINY, _with_hf_dataset(split=""), "datasets.wiki.split"),
    ("hf-text_column-empty-list", TINY, _with_hf_dataset(text_column=[]), "datasets.wiki.text_column"),
    ("hf-doc_start_pattern-bad-regex", TINY, _with_hf_dataset(doc_start_pattern="^ = ([a-z"),
     "datasets.wiki.doc_start_pattern"),
    ("hf-tl_name-empty", TINY, _with_hf_preset(tl_name=""), "presets.h.model.tl_name"),
    ("pretrained-id-other-field", TINY, _with_pretrained(id="layer_{layer}/width_{width}"), "dictionaries.pre.id"),
    ("pretrained-release-empty", TINY, _with_pretrained(release=""), "dictionaries.pre.release"),
    # empty names that silently fall back to a default
    ("influence_dictionary-empty", TINY, _set("presets.t.influence_dictionary", ""), "presets.t.influence_dictionary"),
    ("influence-dictionary-empty", TINY, _set("influence.dictionary", ""), "influence.dictionary"),
    ("publish-license-empty", TINY, _set("publish.license", ""), "publish.license"),
    ("publish-tag-empty", TINY, _set("publish.tags", ["sae", ""]), "publish.tags.1"),
    ("sync-token_env-not-a-name", TINY, _set("sync", {"repo": "someone/data", "token_env": "MY TOKEN"}), "sync.token_env"),
    # the standard-library corpus of the default config
    ("stdlib-unknown-package", DEFAULT, _set("datasets.code-python.packages", ["json", "nosuchpackage"]),
     "datasets.code-python.packages"),
    ("stdlib-package-repeated", DEFAULT, _set("datasets.code-python.packages", ["json", "json"]),
     "datasets.code-python.packages"),
    ("stdlib-package-empty-name", DEFAULT, _set("datasets.code-python.packages", [""]), "datasets.code-python.packages.0"),
    # feature pages and auto-interp
    ("inspect-unknown-dictionary", TINY, _set("inspect.dictionaries", ["topk", "nosuch"]), "inspect.dictionaries"),
    ("autointerp-unlisted-dictionary", TINY, _set("autointerp.dictionaries", ["nosuch"]), "autointerp.dictionaries"),
    ("autointerp-example_len-over-window", TINY, _set("autointerp.example_len", 24), "autointerp.example_len"),
    ("autointerp-windows-over-n_train", TINY, _set("autointerp.n_score", 148), "autointerp.n_score"),
    ("autointerp-scorer-unknown-kind", TINY, _set("autointerp.scorer", {"kind": "gpt"}), "autointerp.scorer.kind"),
    ("autointerp-token-scorer-extra-key", TINY, _set("autointerp.scorer", {"kind": "token", "n_tokens": 3}),
     "autointerp.scorer"),
    ("autointerp-hf-branch-revision", TINY, _set("autointerp.explainer", {"kind": "hf", "hf_id": "Qwen/Qwen2.5-7B-Instruct",
                                                                         "revision": "main"}), "autointerp.explainer.revision"),
    ("autointerp-hf-missing-local_dir", TINY, _set("autointerp.scorer", {"kind": "hf", "hf_id": "a/b", "revision": "0" * 40,
                                                                        "local_dir": MISSING_DIR}), "autointerp.scorer.local_dir"),
    ("autointerp-n_latents-one", TINY, _set("autointerp.n_latents", 1), "autointerp.n_latents"),
    # SAEBench's protocol
    ("saebench-transcoder", TINY, _set("saebench.dictionaries", ["transcoder"]), "saebench.dictionaries"),
    ("saebench-odd-train_size", TINY, _set("saebench.train_size", 41), "saebench.train_size"),
    ("saebench-unknown-dataset", TINY, _set("saebench.tasks", [{"name": "x", "dataset": "nosuch"}]),
     "saebench.tasks.0.dataset"),
    ("saebench-hf-no-class-list", TINY, _set("saebench.tasks", [{"name": "someone/data", "repo": "someone/data",
                                                                "revision": "0" * 40, "label_column": "label"}]),
     "saebench.tasks.0.classes"),
    ("saebench-hf-branch", TINY, _set("saebench.tasks", [{"name": "fancyzhx/ag_news", "repo": "fancyzhx/ag_news",
                                                         "revision": "main", "label_column": "label"}]),
     "saebench.tasks.0.revision"),
    ("saebench-context-over-window", TINY, _all(_set("saebench.context_length", 128), _set(
        "saebench.tasks", [{"name": "fancyzhx/ag_news", "repo": "fancyzhx/ag_news", "revision": "0" * 40,
                            "label_column": "label"}])), "saebench.context_length"),
    # structure
    ("no-presets", TINY, _set("presets", {}), "presets"),
    ("unknown-resource-step", TINY, _set("resources", {"trainer": {"mem_mb": 100}}), "resources.trainer"),
]


def _assert_one_line(message: str, key: str) -> None:
    assert "\n" not in message and len(message) < 400, message
    assert message.startswith(f"config key '{key}': "), message
    assert "allowed" in message or "required" in message, message
    for dump in ("$schema", "additionalProperties", "Failed validating", "{'type'"):
        assert dump not in message, message


def test_bad_configs_are_distinct():
    assert len(BAD) >= 30 and len({case[0] for case in BAD}) == len(BAD)


@pytest.mark.parametrize("base,mutate,key", [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_config_refused_with_one_line(base, mutate, key):
    c = copy.deepcopy(base)
    mutate(c)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.validate(c)
    _assert_one_line(str(e.value), key)


def test_local_dir_that_exists_is_accepted_relative_to_workdir(tmp_path):
    (tmp_path / "copies" / "wiki").mkdir(parents=True)
    c = copy.deepcopy(TINY)
    _with_hf_dataset(local_dir="copies/wiki")(c)
    cfg.validate(copy.deepcopy(c), workdir=tmp_path)
    with pytest.raises(cfg.ConfigError, match="datasets.wiki.local_dir"):
        cfg.validate(c, workdir=tmp_path / "elsewhere")


def test_boundaries_are_accepted():
    """The largest values the cross-field rules allow still validate (the rules are not off by one)."""
    c = copy.deepcopy(TINY)
    for m in (_set("probe.n_train", 150), _set("autocorr.n_docs", 150), _set("autocorr.max_lag", 22),
              _set("datasets.synthetic.doc_len", 23), _set("probe.ks", [1, 128]),
              _set("dictionaries.topk.train_tokens", 256), _set("store", "/abs/store"), _set("figures_dir", "../figs"),
              _set("steer", {"dictionary": "topk", "layer": 1, "n_contrast": 150, "prompt_len": 24}),
              _set("circuit", {"dictionary": "topk", "ks": [1, 64], "n_train": 150})):
        m(c)
    cfg.validate(c)


# ------------------------------------------------------------------------------- config files


DUPLICATES = [
    # (file text, dotted key, line of the second occurrence)
    ("seed: 0\nwindows: {ctx_len: 24}\nseed: 1\n", "seed", 3),
    ("windows:\n  ctx_len: 24\n  n_train: 150\n  n_train: 100\n", "windows.n_train", 4),
    ("windows: {ctx_len: 24, n_train: 150, n_eval: 16, n_train: 100}\n", "windows.n_train", 1),
    ("presets:\n  t: {layers: [1]}\n  u: {layers: [0]}\n  t: {layers: [0]}\n", "presets.t", 4),
    ("datasets:\n  s:\n    source: synthetic\n    window_filter: {min_alpha_frac: 0.1, min_alpha_frac: 0.2}\n",
     "datasets.s.window_filter.min_alpha_frac", 4),
    ("publish:\n  tags:\n    - {a: 1, a: 2}\n", "publish.tags.0.a", 3),
]


@pytest.mark.parametrize("text,key,line", DUPLICATES)
def test_duplicate_yaml_keys_refused_naming_file_line_and_key(tmp_path, text, key, line):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    for load in (cfg.load_config_file, cfg.check_config_file):
        with pytest.raises(cfg.ConfigError) as e:
            load(p)
        msg = str(e.value)
        assert f"config key '{key}'" in msg and str(p) in msg and f"line {line}," in msg and "required" in msg, msg
        assert "\n" not in msg


def test_config_file_problems_are_one_line(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("windows: {ctx_len: 24\nseed: 0\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- seed\n- 0\n")
    (tmp_path / "empty.yaml").write_text("")
    assert cfg.load_config_file(tmp_path / "empty.yaml") == {}
    for p, words in ((tmp_path / "missing.yaml", "not found"), (bad_yaml, "not valid YAML"), (a_list, "a mapping")):
        with pytest.raises(cfg.ConfigError) as e:
            cfg.load_config_file(p)
        assert str(p) in str(e.value) and words in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_load_plan_uses_the_strict_loader(tmp_path):
    p = tmp_path / "dup.yaml"
    p.write_text((ROOT / "tests" / "configs" / "tiny.yaml").read_text() + "seed: 1\n")
    with pytest.raises(cfg.ConfigError, match=r"config key 'seed': given twice"):
        cli.load_plan([str(p)], ROOT)


# --------------------------------------------------------------------------- saeflow status


@pytest.mark.parametrize("args", [[], ["--configfile", "missing.yaml"]], ids=["no-config-in-workdir", "missing-configfile"])
def test_status_outside_a_checkout_is_one_error_line(tmp_path, capsys, args):
    args = [a if a != "missing.yaml" else str(tmp_path / a) for a in args]
    assert cli.main(["status", "--workdir", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: config file ") and "not found" in err, err


def test_status_with_a_config_but_no_checkout_is_one_error_line(tmp_path, capsys):
    conf = ROOT / "tests" / "configs" / "tiny.yaml"
    assert cli.main(["status", "--workdir", str(tmp_path), "--configfile", str(conf)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --workdir ") and "not a saeflow checkout" in err, err


# ------------------------------------------------------------------------------ Snakemake CLI


from test_workflow import copy_workflow  # noqa: E402

TINY_TEXT = (ROOT / "tests" / "configs" / "tiny.yaml").read_text()
SNAKEMAKE_BAD = [
    # (id, file written, its text, --configfile given, the line expected)
    ("duplicate-key", "bad.yaml", TINY_TEXT.replace("windows: {ctx_len: 24,", "windows: {ctx_len: 24, n_eval: 8,"), True,
     "error: config key 'windows.n_eval': given twice in '{path}' (line "),
    ("float-as-integer", "bad.yaml", TINY_TEXT.replace("n_train: 150,", "n_train: 150.0,"), True,
     "error: config key 'windows.n_train': 150.0 is not of type integer"),
    ("empty-store", "bad.yaml", TINY_TEXT.replace("store: data/store", "store: ''"), True,
     "error: config key 'store': '' is empty; required: a non-empty string"),
    ("duplicate-key-in-default-config", "config/config.yaml",
     (ROOT / "config" / "config.yaml").read_text() + "seed: 1\n", False,
     "error: config key 'seed': given twice in '{path}' (line "),
]


@pytest.fixture(scope="module")
def workflow_copy(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("wf"))


@pytest.mark.parametrize("rel,text,given,expected", [c[1:] for c in SNAKEMAKE_BAD], ids=[c[0] for c in SNAKEMAKE_BAD])
def test_snakemake_shows_one_line_and_runs_nothing(workflow_copy, rel, text, given, expected):
    wd = workflow_copy
    path = wd / rel
    original = path.read_text() if path.exists() else None
    path.write_text(text)
    try:
        res = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1",
                              *(["--configfile", str(path)] if given else [])],
                             cwd=wd, capture_output=True, text=True, timeout=300)
    finally:
        if original is None:
            path.unlink()
        else:
            path.write_text(original)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    line = expected.format(path=path)
    assert any(ln.startswith(line) for ln in out.splitlines()), out
    assert len(out.splitlines()) < 40 and "$schema" not in out and "additionalProperties" not in out, out
    assert "Traceback" not in out and "Job stats" not in out and "Failed validating" not in out, out
    assert not (wd / "data").exists()  # no job ran (nor was one planned)
    assert re.search(r"^error: config key '[^']+': .*(allowed|required)", out, re.M), out
