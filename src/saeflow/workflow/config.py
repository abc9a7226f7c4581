"""Configuration: loading config files strictly, schema validation with defaults, semantic checks.

`validate(config)` is the single entry point (the Snakefile and the `saeflow` CLI both call it): it
refuses non-finite numbers, validates against `config/schema.yaml` (floats and booleans are never
integers), fills the schema's defaults, then runs the cross-field checks of `check_semantics`. Every
problem raises `ConfigError` with one line that names the key as a dotted path and what is allowed:

    config key '<dotted.path>': <problem>; allowed values: ...     (or `...; required: ...`)

`load_config_file` reads one YAML file and refuses duplicated keys (YAML would keep the last value
silently); `check_config_file` is that check alone, for files Snakemake has already loaded itself.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"

# Hook sites a dictionary kind reads from; transcoders map the MLP input to the MLP output.
TRANSCODER_KINDS = ("sparsify-skip-transcoder",)

# Longest message: a reason, never the schema (jsonschema's own errors embed schema fragments).
MAX_MESSAGE = 380


class ConfigError(ValueError):
    """A config value is invalid. The message is one line that names the key (a dotted path, or the
    config file for file-level problems) and the allowed or required values."""

    def __init__(self, message: str):
        message = " ".join(str(message).split())
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().__init__(message)


def load_schema(path: Path | None = None) -> dict:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


# ------------------------------------------------------------------------------------------ files


def _check_duplicate_keys(node, path: list[str], where: str, seen_nodes: set[int]) -> None:
    if id(node) in seen_nodes:  # an alias: its node was checked where the anchor is
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            line = key_node.start_mark.line + 1
            if name != "<<" and name in first:
                dotted = ".".join(path + [name])
                raise ConfigError(f"config key '{dotted}': given twice in {where} (line {line}, first at line "
                                  f"{first[name]}), and YAML silently keeps the last value; required: each key "
                                  "once per mapping")
            first.setdefault(name, line)
            _check_duplicate_keys(value_node, path + [name], where, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _check_duplicate_keys(item, path + [str(i)], where, seen_nodes)


def _read_config_text(path: Path | str) -> tuple[str, yaml.Node | None]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{p}' not found; required: an existing YAML config file "
                          "(--configfile, or config/config.yaml of the workflow directory)") from None
    except OSError as e:
        raise ConfigError(f"config file '{p}' cannot be read ({e.strerror}); required: a readable YAML file") from None
    try:
        # Composing builds the node tree (with line numbers) without constructing values; any tag parses.
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise ConfigError(f"config file '{p}'{at}: not valid YAML ({problem}); required: a YAML mapping "
                          "of config keys") from None
    _check_duplicate_keys(node, [], f"'{p}'", set())
    return text, node


def check_config_file(path: Path | str) -> None:
    """Raise ConfigError if the file cannot be read or parsed, or if a mapping in it repeats a key
    (naming the file, the line and the key's dotted path). For files Snakemake loads itself."""
    _read_config_text(path)


def load_config_file(path: Path | str) -> dict:
    """The mapping of one YAML config file, refusing what `check_config_file` refuses and a file whose
    top level is not a mapping (an empty file is {})."""
    text, _ = _read_config_text(path)
    data = yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file '{path}' holds a {type(data).__name__}; required: a mapping of config keys")
    return data


# ----------------------------------------------------------------------------------------- schema


def _is_integer(checker, instance) -> bool:
    # jsonschema's own "integer" accepts floats with a zero fraction (150.0, 4.096e+3): a float here is
    # a typo or a computed value, and it would reach the key as 150.0, not 150.
    return isinstance(instance, int) and not isinstance(instance, bool)


def _is_number(checker, instance) -> bool:
    return isinstance(instance, (int, float)) and not isinstance(instance, bool)


def _with_defaults(validator_cls):
    """A jsonschema validator class that also fills `default`s (as snakemake.utils.validate does)."""
    import jsonschema

    validate_properties = validator_cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_cls, {"properties": set_defaults})


def _validator_class(schema: dict):
    """The schema's validator class with strict integer/number types and default filling."""
    import jsonschema

    base = jsonschema.validators.validator_for(schema)
    checker = base.TYPE_CHECKER.redefine_many({"integer": _is_integer, "number": _is_number})
    return _with_defaults(jsonschema.validators.extend(base, type_checker=checker))


def _short(value, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def _fmt(value) -> str:
    """A schema value as the config would spell it (true, null, plain strings)."""
    return value if isinstance(value, str) else json.dumps(value)


def _dotted(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def _describe(error) -> str:
    """One line for a jsonschema error: key, problem, and the allowed or required values. Only the
    error's own keyword and value are shown, never the schema it sits in."""
    path = _dotted(error.absolute_path)
    v, val, inst = error.validator, error.validator_value, error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    what = f"key {inst!r}" if "propertyNames" in error.schema_path else _short(inst)
    if v == "enum":
        msg = f"{what} is not allowed; allowed values: {', '.join(map(_fmt, val))}"
    elif v == "const":
        msg = f"{what} is not allowed; allowed values: {_fmt(val)}"
    elif v == "type":
        types = [val] if isinstance(val, str) else list(val)
        note = " (a float is never an integer here, even with a zero fraction)" \
            if "integer" in types and isinstance(inst, float) else ""
        msg = f"{what} is not of type {' or '.join(types)}{note}; required: type {' or '.join(types)}"
    elif v == "additionalProperties" and isinstance(schema.get("properties"), dict):
        msg = f"{error.message}; allowed keys: {', '.join(sorted(schema['properties']))}"
    elif v == "required":
        msg = f"{error.message}; required keys: {', '.join(val)}"
    elif v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        msg = f"{error.message}; required: {v} {val}"
    elif v == "minItems":
        msg = f"{what} has fewer than {val} item(s); required: at least {val} item(s)"
    elif v == "uniqueItems":
        msg = f"{what} repeats an item; required: distinct items"
    elif v == "minLength":
        msg = f"{what} is empty; required: a non-empty string"
    elif v == "minProperties":
        msg = f"{what} has no entry; required: at least {val} entry"
    elif v == "pattern":
        desc = str(schema.get("description", ""))
        desc = f" ({desc})" if desc and len(desc) < 60 else ""
        msg = f"{what} does not match {val!r}; required: a string matching {val}{desc}"
    else:
        msg = f"{error.message}; required: {v} {_short(val)}"
    return f"config key '{path}': {msg}"


def _check_finite(value, path: list) -> None:
    # NaN passes every `minimum` (comparisons with NaN are false) and keys refuse it later naming no key.
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config key '{_dotted(path)}': {value!r} is not a finite number; required: a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, path + [k])
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, path + [i])


def validate(config: dict, schema: dict | None = None, workdir: Path | str | None = None) -> dict:
    """Validate `config` in place and return it, defaults filled; the one check the Snakefile and the
    CLI run. Raises ConfigError (one line: dotted key, problem, allowed/required values) on the first
    problem: a non-finite number, a schema violation, or a cross-field check of `check_semantics`.
    `workdir` is where relative `local_dir`s are looked up (default: the current directory, where
    Snakemake runs its jobs)."""
    import jsonschema

    if not isinstance(config, dict):
        raise ConfigError(f"config key '<top level>': {_short(config)} is not a mapping; required: a mapping of config keys")
    _check_finite(config, [])
    schema = schema or load_schema()
    cls = _validator_class(schema)
    # Defaults of entries inside `if/then` branches are only filled once their branch validated;
    # a second pass fills those that depend on fields defaulted by the first.
    for _ in range(2):
        errors = sorted(cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
        if errors:
            # `best_match` picks the most specific of the errors inside allOf/if branches.
            raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    _expand_controls(config)
    check_semantics(config, workdir)
    return config


RANDOMIZED_INIT = "transformer_lens"  # how a randomized control is initialised (saeflow.models.controls)


def control_preset_name(pname: str, kind: str) -> str:
    return f"{pname}-{kind}"


def _expand_controls(config: dict) -> None:
    """Each `presets.<p>.controls` entry becomes a preset `<p>-<kind>` right after <p>: a copy of <p> (no
    `controls`) with `control: {kind, of: <p>, seed}`, planned like any preset (saeflow.workflow.plan runs its
    nodes on the control model). A derived preset is rebuilt from its base every time, so validating a validated
    config gives the same config and an edited base never keeps a stale copy."""
    presets = config["presets"]
    derived_of = {control_preset_name(p, k): (p, k) for p, pre in presets.items() for k in pre.get("controls", [])}
    for name, pre in presets.items():
        if "control" in pre:
            of = derived_of.get(name)
            _require(of is not None and (pre["control"]["of"], pre["control"]["kind"]) == of, f"presets.{name}.control",
                     "is set by saeflow on a control preset, named <preset>-<kind> after its preset's `controls`; "
                     "required: list the control in presets.<preset>.controls instead")
    for name, (base, kind) in derived_of.items():
        _require(name not in presets or "control" in presets[name], f"presets.{name}",
                 f"is the name of the {kind} control of preset {base!r} (presets.{base}.controls); required: another "
                 "preset name")
    expanded = {}
    for name, pre in presets.items():
        if name in derived_of:
            continue  # placed after its base below
        expanded[name] = pre
        for kind in pre.get("controls", []):
            cname = control_preset_name(name, kind)
            spec = {"kind": kind, "of": name, "seed": config.get("seed", 0)}
            expanded[cname] = {**copy.deepcopy({k: v for k, v in pre.items() if k != "controls"}), "control": spec}
    presets.clear()
    presets.update(expanded)


# -------------------------------------------------------------------------------------- semantics


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {msg}")


RESERVED_PRESET_NAMES = {"store", "logs", "benchmarks", "figures"}


def influence_dictionary(config: dict, pname: str) -> str:
    """The dictionary of a preset's influence analyses: its `influence_dictionary`, else
    `influence.dictionary`, else its first SAE (not a transcoder)."""
    preset = config["presets"][pname]
    chosen = preset.get("influence_dictionary") or (config.get("influence") or {}).get("dictionary")
    if chosen:
        return chosen
    saes = [d for d in preset["dictionaries"] if config["dictionaries"].get(d, {}).get("kind") not in TRANSCODER_KINDS]
    _require(bool(saes), f"presets.{pname}.dictionaries",
             "the influence analyses need an SAE (not a transcoder); required: an SAE dictionary in this list")
    return saes[0]


def _check_directory_name(key: str, value: str, example: str) -> None:
    """`value` names a directory of its own, written in normal form: the plan builds output paths by
    appending '/<step>/<key>' (or '/<figure>') to it, so '' or '/' would put them at the filesystem root,
    and 'data/store/' or './data/store' would give paths ('data/store//dict/...') that differ, as strings,
    from the same files written in normal form."""
    norm = os.path.normpath(value) if value else ""
    own = Path(norm).name not in ("", "..")
    hint = f" (write {norm!r})" if value and value != norm and own else ""
    _require(bool(value) and value == norm and value.strip() == value and own, key,
             f"{value!r} does not name a directory of its own{hint}; required: a normalised path naming a directory, "
             f"e.g. {example!r} (not empty, '/', '.' or '..', without a trailing '/' or a leading './')")


def _check_local_dir(key: str, value, workdir: Path | str | None) -> None:
    # Jobs read local copies from here; a typo would otherwise fail only inside the job that reads it,
    # after its upstream work.
    if value is None:
        return
    p = Path(value)
    if not p.is_absolute():
        p = Path(workdir or Path.cwd()) / p
    _require(p.is_dir(), key, f"{value!r} is not a directory on this machine; required: an existing directory "
             "(a local copy), or null to read the hub")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _check_datasets(config: dict) -> None:
    for dname, spec in config["datasets"].items():
        key = f"datasets.{dname}"
        if spec["source"] == "stdlib":
            from saeflow.data import corpus  # the names corpus.stdlib_files accepts (lazy: numpy)

            root = corpus._stdlib_root()
            allowed = corpus._stdlib_names(root)
            for name in spec["packages"]:
                public = [a for a in allowed if not a.startswith("_")]
                _require(name in allowed, f"{key}.packages",
                         f"unknown standard-library package or module {name!r}; allowed values: the top-level "
                         f"packages and modules of {root}, e.g. {', '.join(public[:12])}, ...")
        elif spec["source"] == "synthetic":
            _require(spec["p_lag"] + spec["p_topic"] <= 1, f"{key}.p_topic",
                     f"p_lag + p_topic = {spec['p_lag'] + spec['p_topic']:g} is more than 1 (they are probabilities "
                     f"of one position); allowed values: 0..{1 - spec['p_lag']:g} with p_lag={spec['p_lag']:g}")
            _require(spec["lag"] < spec["doc_len"], f"{key}.lag",
                     f"lag={spec['lag']} leaves no echo in documents of doc_len={spec['doc_len']} words (an echo copies "
                     f"the word lag positions back); allowed values: 1..{spec['doc_len'] - 1}")
        elif spec["source"] == "mixture":
            plain = [n for n, d in config["datasets"].items() if d["source"] != "mixture"]
            for part in spec["parts"]:
                _require(part in plain, f"{key}.parts", f"{part!r} is not a dataset of this config (or is itself a "
                         f"mixture); allowed values: {', '.join(plain)}")
        elif spec["source"] == "hf":
            from saeflow.data.corpus import _FLOATING_REVISIONS  # the rule corpus.hf_identity enforces in the job

            _require(spec["revision"].strip().lower() not in _FLOATING_REVISIONS, f"{key}.revision",
                     f"{spec['revision']!r} is a branch, which moves, so the key would not pin the data; "
                     "required: a pinned commit sha or tag")
            if spec.get("doc_start_pattern") is not None:
                try:
                    re.compile(spec["doc_start_pattern"])
                except re.error as e:
                    raise ConfigError(f"config key '{key}.doc_start_pattern': {spec['doc_start_pattern']!r} is not "
                                      f"a regular expression ({e}); required: a Python regular expression") from None


def _check_dictionaries(config: dict) -> None:
    for dname, spec in config["dictionaries"].items():
        key = f"dictionaries.{dname}"
        if spec["kind"] == "pretrained":
            try:
                spec["id"].format(layer=0)
            except (KeyError, IndexError, ValueError) as e:
                raise ConfigError(f"config key '{key}.id': {spec['id']!r} cannot be formatted with the layer "
                                  f"({type(e).__name__}: {e}); required: a string whose only field is {{layer}}") from None
        else:
            relu = spec["kind"] == "saelens-relu"  # its sparsity is an L1 penalty, the TopK kinds' a fixed k
            _require(relu or "k" in spec, f"{key}.k", f"kind {spec['kind']!r} needs k (active latents per token); "
                     "required: an integer >= 1")
            _require(not relu or "k" not in spec, f"{key}.k", "kind 'saelens-relu' has no k (its sparsity comes from "
                     "l1_coefficient); allowed values: none, remove the key")
            _require(not relu or "l1_coefficient" in spec, f"{key}.l1_coefficient", "kind 'saelens-relu' needs the "
                     "weight of its L1 penalty; required: a number > 0 (e.g. 5)")
            _require(relu or "l1_coefficient" not in spec, f"{key}.l1_coefficient", f"only kind 'saelens-relu' takes "
                     f"it, not {spec['kind']!r}; allowed values: none, remove the key (or use k)")
            # train_dict runs train_tokens // batch_size steps
            _require(spec["train_tokens"] >= spec["batch_size"], f"{key}.train_tokens",
                     f"{spec['train_tokens']} is less than batch_size={spec['batch_size']}, so training would run no "
                     f"step (steps = train_tokens // batch_size); required: train_tokens >= {spec['batch_size']}")


def _d_sae(config: dict, dname: str, preset: dict) -> int | None:
    """Width of a trained dictionary at a preset (None for pretrained ones: known once loaded)."""
    spec = config["dictionaries"][dname]
    return None if spec["kind"] == "pretrained" else trained_width(spec, preset["model"]["d_model"])


def trained_width(spec: dict, d_model: int) -> int:
    """Latents of a trained dictionary: its `d_sae` when given (a width that is no multiple of d_model, e.g.
    4096 latents on Qwen3-4B's 2560), else expansion x d_model."""
    return spec.get("d_sae") or spec["expansion"] * d_model


def _check_resource_steps(config: dict) -> None:
    """`resources:` (top level and per preset) is keyed by step names of the registry."""
    from saeflow.workflow.steps import KEYED

    where = [("resources", config.get("resources", {}))]
    where += [(f"presets.{p}.resources", pre.get("resources", {})) for p, pre in config["presets"].items()]
    for key, section in where:
        for name in section:
            _require(name in KEYED, f"{key}.{name}", f"not a step; allowed values: {', '.join(KEYED)}")


def check_semantics(config: dict, workdir: Path | str | None = None) -> None:
    """Cross-field checks the schema cannot express, on a config the schema validated (defaults
    filled); raises ConfigError naming the key. `workdir`: where relative `local_dir`s are found."""
    _check_directory_name("store", config["store"], "data/store")
    _check_resource_steps(config)
    _check_directory_name("figures_dir", config["figures_dir"], "figures")
    _check_datasets(config)
    _check_dictionaries(config)
    datasets = config["datasets"]
    dicts = config["dictionaries"]
    win = config["windows"]
    ctx_len = win["ctx_len"]
    windowed: set[str] = set()  # datasets windows are cut from
    for pname, preset in config["presets"].items():
        # data/<preset>/ of the published tree sits beside these directories
        _require(pname not in RESERVED_PRESET_NAMES, f"presets.{pname}",
                 f"{pname!r} is a directory of data/, so a preset may not be named that; required: a name other "
                 f"than {', '.join(sorted(RESERVED_PRESET_NAMES))}")
        model = preset["model"]
        n_layers = model["n_layers"]
        d_model = model["d_model"]
        if model["source"] == "embedded":
            _require(model["train_dataset"] in datasets, f"presets.{pname}.model.train_dataset",
                     f"unknown dataset {model['train_dataset']!r}; allowed values: {', '.join(datasets)}")
            windowed.add(model["train_dataset"])
            _require(d_model % model["n_heads"] == 0, f"presets.{pname}.model.n_heads",
                     f"{model['n_heads']} must divide d_model={d_model}; allowed values: "
                     f"{', '.join(map(str, _divisors(d_model)))}")
        else:
            _check_local_dir(f"presets.{pname}.model.local_dir", model.get("local_dir"), workdir)
        for layer in preset["layers"]:
            _require(0 <= layer < n_layers, f"presets.{pname}.layers",
                     f"layer {layer} is outside the model; allowed values: 0..{n_layers - 1}")
        for ds in preset["datasets"]:
            _require(ds in datasets, f"presets.{pname}.datasets",
                     f"unknown dataset {ds!r}; allowed values: {', '.join(datasets)}")
            windowed.add(ds)
        for dname in preset["dictionaries"]:
            _require(dname in dicts, f"presets.{pname}.dictionaries",
                     f"unknown dictionary {dname!r}; allowed values: {', '.join(dicts)}")
            # Only what a preset uses is read on this machine (a catalogue entry may name another's paths).
            _check_local_dir(f"dictionaries.{dname}.local_dir", dicts[dname].get("local_dir"), workdir)
            d_sae = _d_sae(config, dname, preset)
            if d_sae is not None and "k" in dicts[dname]:  # saelens-relu has no k
                k = dicts[dname]["k"]
                _require(k < d_sae, f"dictionaries.{dname}.k",
                         f"k={k} must be < d_sae={d_sae} (d_sae, or expansion x d_model of preset {pname}); "
                         f"allowed values: 1..{d_sae - 1}")
        inf = config.get("influence")
        if inf:
            chosen = influence_dictionary(config, pname)
            where = f"presets.{pname}.influence_dictionary" if preset.get("influence_dictionary") else "influence.dictionary"
            _require(chosen in preset["dictionaries"], where,
                     f"{chosen!r} is not among presets.{pname}.dictionaries; allowed values: "
                     f"{', '.join(preset['dictionaries'])}")
            _require(max(inf["ctx_lens"]) <= ctx_len, "influence.ctx_lens",
                     f"every context length must be <= windows.ctx_len={ctx_len}; allowed values: 2..{ctx_len}")
            _require(inf["sweep_min"] <= ctx_len, "influence.sweep_min",
                     f"{inf['sweep_min']} must be <= windows.ctx_len={ctx_len}; allowed values: 2..{ctx_len}")
            _require(inf["n_windows"] <= win["n_eval"], "influence.n_windows",
                     f"{inf['n_windows']} must be <= windows.n_eval={win['n_eval']} (windows are drawn from the eval "
                     f"split); allowed values: 1..{win['n_eval']}")
    for ds in sorted(windowed):
        spec = datasets[ds]
        _check_local_dir(f"datasets.{ds}.local_dir", spec.get("local_dir"), workdir)
        for part in spec.get("parts", []):  # a mixture reads its parts' corpora
            _check_local_dir(f"datasets.{part}.local_dir", datasets[part].get("local_dir"), workdir)
        if spec["source"] == "synthetic":
            # cut_windows takes ctx_len - 1 document tokens after BOS; a word is at least one token (the
            # byte-level pre-tokenizer splits at each word's leading space), so doc_len >= ctx_len - 1
            # words guarantees every document holds a window (with one token per word, as the corpus is
            # designed, shorter documents hold none).
            _require(spec["doc_len"] >= ctx_len - 1, "windows.ctx_len",
                     f"{ctx_len} needs ctx_len - 1 = {ctx_len - 1} document tokens after BOS, but synthetic dataset "
                     f"{ds!r} has doc_len={spec['doc_len']} words (each at least one token); allowed values: "
                     f"4..{spec['doc_len'] + 1} (ctx_len <= doc_len + 1)")
    saes = [d for d, s in dicts.items() if s["kind"] not in TRANSCODER_KINDS]  # what probing and steering accept
    listed = sorted({d for p in config["presets"].values() for d in p["dictionaries"]})

    def listed_saes(section: str) -> None:
        """Every dictionary of `<section>.dictionaries` is an SAE (not a transcoder) that some preset lists."""
        for dname in config[section]["dictionaries"]:
            _require(dname in dicts and dicts[dname]["kind"] not in TRANSCODER_KINDS, f"{section}.dictionaries",
                     f"{dname!r} must name an SAE dictionary; allowed values: {', '.join(saes)}")
            _require(dname in listed, f"{section}.dictionaries",
                     f"{dname!r} is not listed by any preset; allowed values: {', '.join(listed)}")

    if config.get("probe"):
        probe = config["probe"]
        listed_saes("probe")
        # The probe job samples min(probe.n_train, windows.n_train) windows, while the key records the request.
        _require(probe["n_train"] <= win["n_train"], "probe.n_train",
                 f"{probe['n_train']} is more than windows.n_train={win['n_train']} (probe windows are drawn from the "
                 f"train windows); required: probe.n_train <= {win['n_train']}")
        for pname, preset in config["presets"].items():
            for dname in (d for d in probe["dictionaries"] if d in preset["dictionaries"]):
                d_sae = _d_sae(config, dname, preset)
                for k in probe["ks"]:
                    # probe.sparse_probing would clip k to the width, so the result would not be top-k
                    _require(d_sae is None or k <= d_sae, "probe.ks",
                             f"k={k} is more than d_sae={d_sae} of dictionary {dname!r} in preset {pname!r}; "
                             f"allowed values: 1..{d_sae}")
    if config.get("circuit"):
        ci = config["circuit"]
        _require(ci["dictionary"] in saes, "circuit.dictionary",
                 f"{ci['dictionary']!r} must name an SAE dictionary; allowed values: {', '.join(saes)}")
        _require(any(ci["dictionary"] in pr["dictionaries"] for pr in config["presets"].values()), "circuit.dictionary",
                 f"{ci['dictionary']!r} is not listed by any preset; allowed values: "
                 + ", ".join(d for d in listed if d in saes))
        _require(ci["n_train"] <= win["n_train"], "circuit.n_train",
                 f"{ci['n_train']} is more than windows.n_train={win['n_train']}; required: circuit.n_train <= "
                 f"{win['n_train']}")
        for pname, preset in config["presets"].items():
            d_sae = _d_sae(config, ci["dictionary"], preset) if ci["dictionary"] in preset["dictionaries"] else None
            for k in ci["ks"] if d_sae is not None else ():  # a pretrained width is known once loaded
                _require(2 * k <= d_sae, "circuit.ks",
                         f"k={k} leaves no null set in d_sae={d_sae} of {ci['dictionary']!r} in preset {pname!r} "
                         f"(an ablation's null sets are drawn outside the circuit); allowed values: 1..{d_sae // 2}")
    if config.get("feature_diff"):
        fdc = config["feature_diff"]
        presets = config["presets"]
        _require(fdc["n_windows"] <= win["n_eval"], "feature_diff.n_windows",
                 f"{fdc['n_windows']} is more than windows.n_eval={win['n_eval']}; required: <= {win['n_eval']}")
        for a, b in fdc["pairs"]:
            for name in (a, b):
                _require(name in presets, "feature_diff.pairs",
                         f"{name!r} is not a preset; allowed values: {', '.join(presets)}")
                _require(fdc["dictionary"] in presets[name]["dictionaries"], "feature_diff.dictionary",
                         f"{fdc['dictionary']!r} is not among presets.{name}.dictionaries; allowed values: "
                         + ", ".join(presets[name]["dictionaries"]))
            _require(a != b, "feature_diff.pairs", f"[{a}, {b}] compares a preset with itself; required: two presets")
            _require(presets[a]["model"]["d_model"] == presets[b]["model"]["d_model"], "feature_diff.pairs",
                     f"{a!r} has d_model {presets[a]['model']['d_model']}, {b!r} {presets[b]['model']['d_model']}; "
                     "required: presets of one d_model")
            _require(bool(set(presets[a]["datasets"]) & set(presets[b]["datasets"])), "feature_diff.pairs",
                     f"{a!r} and {b!r} share no dataset; required: at least one dataset both list")
            _require(bool(set(presets[a]["layers"]) & set(presets[b]["layers"])), "feature_diff.pairs",
                     f"{a!r} and {b!r} share no layer; required: at least one layer both list")
    if config.get("compare"):
        for dname in config["compare"]["dictionaries"]:
            _require(dname in listed, "compare.dictionaries",
                     f"{dname!r} is not listed by any preset; allowed values: {', '.join(listed)}")
    if config.get("steer"):
        st = config["steer"]
        _require(st["dictionary"] in saes, "steer.dictionary",
                 f"{st['dictionary']!r} must name an SAE dictionary (a transcoder's decoder writes to another site); "
                 f"allowed values: {', '.join(saes)}")
        steering = [n for n, pr in config["presets"].items() if st["dictionary"] in pr["dictionaries"]]
        _require(bool(steering), "steer.dictionary", f"{st['dictionary']!r} is not listed by any preset; allowed values: "
                 + ", ".join(d for d in listed if d in saes))
        for pname in steering:
            layers = config["presets"][pname]["layers"]
            _require(st["layer"] in ("first", "last") or st["layer"] in layers, "steer.layer",
                     f"{st['layer']!r} is not a layer of preset {pname!r}; allowed values: first, last, "
                     + ", ".join(map(str, layers)))
        _require(st["n_contrast"] is None or st["n_contrast"] <= win["n_train"], "steer.n_contrast",
                 f"{st['n_contrast']} is more than windows.n_train={win['n_train']}; required: steer.n_contrast <= "
                 f"{win['n_train']}")
        _require(st["prompt_len"] <= ctx_len, "steer.prompt_len",
                 f"{st['prompt_len']} is longer than the windows (ctx_len={ctx_len}); allowed values: 2..{ctx_len}")
        # with chat_template the prompt grows by the template's tokens (known once the tokenizer is loaded)
        _require(st["chat_template"] or st["from_pos"] < st["prompt_len"] + st["max_new_tokens"], "steer.from_pos",
                 f"{st['from_pos']} is past every position; allowed values: 0..{st['prompt_len'] + st['max_new_tokens'] - 1}")
    for section in ("autocorr", "geometry"):
        _require(not config.get(section) or bool(config.get("influence")), section,
                 "needs the `influence` section (it uses influence.dictionary and the H_pos results); "
                 "required: an `influence` section")
    if config.get("autocorr"):
        a = config["autocorr"]
        _require(a["density_min"] <= a["density_max"], "autocorr.density_min",
                 f"{a['density_min']:g} must be <= autocorr.density_max={a['density_max']:g}; allowed values: "
                 f"0..{a['density_max']:g}")
        # The autocorr job reads the first n_docs train windows, silently fewer if there are fewer.
        _require(a["n_docs"] <= win["n_train"], "autocorr.n_docs",
                 f"{a['n_docs']} is more than windows.n_train={win['n_train']} (documents are the train windows); "
                 f"required: autocorr.n_docs <= {win['n_train']}")
        # A window has ctx_len - 1 positions after BOS: larger lags have no pair and give NaN.
        _require(a["max_lag"] <= ctx_len - 2, "autocorr.max_lag",
                 f"{a['max_lag']} leaves no pair of positions in windows of ctx_len - 1 = {ctx_len - 1} tokens after "
                 f"BOS; allowed values: 1..{ctx_len - 2}")
    for section in ("inspect", "autointerp"):
        sec = config.get(section)
        if not sec:
            continue
        for dname in sec["dictionaries"]:
            _require(dname in listed, f"{section}.dictionaries",
                     f"{dname!r} is not listed by any preset; allowed values: {', '.join(listed)}")
    if config.get("autointerp"):
        ai = config["autointerp"]
        _require(ai["example_len"] <= ctx_len - 1, "autointerp.example_len",
                 f"{ai['example_len']} is longer than a window's ctx_len - 1 = {ctx_len - 1} tokens after BOS; "
                 f"allowed values: 2..{ctx_len - 1}")
        _require(ai["n_explain"] + ai["n_score"] <= win["n_train"], "autointerp.n_score",
                 f"n_explain + n_score = {ai['n_explain'] + ai['n_score']} activating windows per latent are more than "
                 f"windows.n_train={win['n_train']} (the scanned windows); required: n_explain + n_score <= "
                 f"{win['n_train']}")
        for role in ("explainer", "scorer"):
            spec = ai[role]
            if spec["kind"] != "hf":
                continue
            _check_local_dir(f"autointerp.{role}.local_dir", spec.get("local_dir"), workdir)
            _require(spec["local_dir"] is not None or bool(re.fullmatch(r"[0-9a-f]{40}", spec["revision"])),
                     f"autointerp.{role}.revision",
                     f"{spec['revision']!r} is not a pinned commit; required: 40 hex digits (the hub model's commit "
                     "sha), or a local_dir")
    for i, ref in enumerate((config.get("ledger") or {}).get("references", [])):
        key = f"ledger.references.{i}"
        _require(ref["range"][0] <= ref["range"][1], f"{key}.range",
                 f"{ref['range']} is not [lo, hi] with lo <= hi; required: an ordered range")
        for c, known in (("preset", config["presets"]), ("dataset", datasets), ("dictionary", dicts)):
            _require(ref.get(c) is None or ref[c] in known, f"{key}.{c}",
                     f"unknown {c} {ref.get(c)!r}; allowed values: {', '.join(known)}")
    if config.get("saebench"):
        sb = config["saebench"]
        listed_saes("saebench")
        for key in ("train_size", "test_size"):
            _require(sb[key] % 2 == 0, f"saebench.{key}", f"{sb[key]} is odd; required: an even number (half of the "
                     "items are the positive class)")
        names = [t["name"] for t in sb["tasks"]]
        _require(len(set(names)) == len(names), "saebench.tasks", f"task names {names} repeat; required: distinct names")
        from saeflow.data.saebench_sets import CLASS_SETS

        for i, t in enumerate(sb["tasks"]):
            key = f"saebench.tasks.{i}"
            if "dataset" in t:
                spec = datasets.get(t["dataset"])
                _require(spec is not None, f"{key}.dataset",
                         f"unknown dataset {t['dataset']!r}; allowed values: {', '.join(datasets)}")
                _require(spec["source"] != "hf" or bool(spec.get("label_column")), f"{key}.dataset",
                         f"{t['dataset']!r} has no labels (label_column); required: a labelled dataset")
                continue
            _check_local_dir(f"{key}.local_dir", t.get("local_dir"), workdir)
            _require(t["local_dir"] is not None or bool(re.fullmatch(r"[0-9a-f]{40}", t["revision"])), f"{key}.revision",
                     f"{t['revision']!r} is not a pinned commit; required: 40 hex digits, or a local_dir")
            _require(t["classes"] is not None or t["name"] in CLASS_SETS, f"{key}.classes",
                     f"no class list for {t['name']!r}; allowed values: a list of labels, or a task named as one of "
                     f"SAEBench's datasets ({', '.join(CLASS_SETS)})")
            for pname, preset in config["presets"].items():
                if preset["model"]["source"] == "embedded":
                    _require(sb["context_length"] <= ctx_len, "saebench.context_length",
                             f"{sb['context_length']} is longer than the embedded model of preset {pname!r} reads "
                             f"(windows.ctx_len={ctx_len}); allowed values: 2..{ctx_len}")
