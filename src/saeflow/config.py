"""Configuration: schema validation with defaults, then semantic checks.

`validate(config)` fills defaults from `config/schema.yaml` and raises `ConfigError` on the first
problem, with a message that names the key (as a dotted path) and the allowed values. The Snakefile
runs Snakemake's own `snakemake.utils.validate` against the same schema first, then `check_semantics`,
so a bad config fails before any job is scheduled.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"

# Hook sites a dictionary kind reads from; transcoders map the MLP input to the MLP output.
TRANSCODER_KINDS = ("sparsify-skip-transcoder",)


class ConfigError(ValueError):
    """A config value is invalid; the message names the key and what is allowed."""


def load_schema(path: Path | None = None) -> dict:
    return yaml.safe_load(Path(path or SCHEMA_PATH).read_text())


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


def _describe(error) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    schema = error.schema if isinstance(error.schema, dict) else {}
    allowed = ""
    if error.validator == "enum":
        allowed = f"; allowed values: {', '.join(map(str, error.validator_value))}"
    elif error.validator == "additionalProperties" and isinstance(schema.get("properties"), dict):
        allowed = f"; allowed keys: {', '.join(sorted(schema['properties']))}"
    elif error.validator in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "pattern", "type"):
        allowed = f"; required: {error.validator} {error.validator_value!r}"
    return f"config key '{path}': {error.message}{allowed}"


def validate(config: dict, schema: dict | None = None) -> dict:
    """Validate in place (defaults filled) and run the semantic checks; returns the config."""
    import jsonschema

    schema = schema or load_schema()
    cls = _with_defaults(jsonschema.validators.validator_for(schema))
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        # `best_match` picks the most specific of the errors inside allOf/if branches.
        raise ConfigError(_describe(jsonschema.exceptions.best_match(errors)))
    # Defaults of entries inside `if/then` branches are only filled once their branch validated;
    # a second pass fills those that depend on fields defaulted by the first.
    cls(schema).validate(config)
    check_semantics(config)
    return config


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
    _require(bool(saes), f"presets.{pname}.dictionaries", "the influence analyses need an SAE (not a transcoder)")
    return saes[0]


def check_semantics(config: dict) -> None:
    """Cross-field checks the schema cannot express."""
    datasets = config["datasets"]
    dicts = config["dictionaries"]
    for pname, preset in config["presets"].items():
        # data/<preset>/ of the published tree sits beside these directories
        _require(pname not in RESERVED_PRESET_NAMES, f"presets.{pname}",
                 f"{pname!r} is a directory of data/; a preset may not be named {', '.join(sorted(RESERVED_PRESET_NAMES))}")
        model = preset["model"]
        n_layers = model.get("n_layers", 4)
        d_model = model.get("d_model", 128)
        embedded = model["source"] == "embedded"
        if embedded:
            _require(model["train_dataset"] in datasets, f"presets.{pname}.model.train_dataset",
                     f"unknown dataset {model['train_dataset']!r}; allowed values: {', '.join(datasets)}")
            _require(d_model % model.get("n_heads", 4) == 0, f"presets.{pname}.model.n_heads",
                     f"must divide d_model={d_model}")
        for layer in preset["layers"]:
            _require(0 <= layer < n_layers, f"presets.{pname}.layers",
                     f"layer {layer} is outside the model; allowed values: 0..{n_layers - 1}")
        for ds in preset["datasets"]:
            _require(ds in datasets, f"presets.{pname}.datasets",
                     f"unknown dataset {ds!r}; allowed values: {', '.join(datasets)}")
        for dname in preset["dictionaries"]:
            _require(dname in dicts, f"presets.{pname}.dictionaries",
                     f"unknown dictionary {dname!r}; allowed values: {', '.join(dicts)}")
            spec = dicts[dname]
            if spec["kind"] != "pretrained":
                d_sae = spec.get("expansion", 8) * d_model
                _require(spec["k"] < d_sae, f"dictionaries.{dname}.k",
                         f"k={spec['k']} must be < d_sae={d_sae} (expansion x d_model of preset {pname})")
        inf = config.get("influence")
        if inf:
            chosen = influence_dictionary(config, pname)
            where = f"presets.{pname}.influence_dictionary" if preset.get("influence_dictionary") else "influence.dictionary"
            _require(chosen in preset["dictionaries"], where,
                     f"{chosen!r} is not among presets.{pname}.dictionaries; allowed values: "
                     f"{', '.join(preset['dictionaries'])}")
            ctx_len = config["windows"]["ctx_len"]
            _require(max(inf["ctx_lens"]) <= ctx_len, "influence.ctx_lens",
                     f"every context length must be <= windows.ctx_len={ctx_len}")
            _require(inf["sweep_min"] <= ctx_len, "influence.sweep_min", f"must be <= windows.ctx_len={ctx_len}")
            _require(inf["n_windows"] <= config["windows"]["n_eval"], "influence.n_windows",
                     f"must be <= windows.n_eval={config['windows']['n_eval']} (windows are drawn from the eval split)")
    if config.get("probe"):
        for dname in config["probe"]["dictionaries"]:
            _require(dname in dicts and dicts[dname]["kind"] not in TRANSCODER_KINDS, "probe.dictionaries",
                     f"{dname!r} must name an SAE dictionary; allowed values: "
                     f"{', '.join(d for d, s in dicts.items() if s['kind'] not in TRANSCODER_KINDS)}")
            listed = sorted({d for p in config["presets"].values() for d in p["dictionaries"]})
            _require(dname in listed, "probe.dictionaries",
                     f"{dname!r} is not listed by any preset; allowed values: {', '.join(listed)}")
    for section in ("autocorr", "geometry"):
        _require(not config.get(section) or bool(config.get("influence")), section,
                 "needs the `influence` section (it uses influence.dictionary and the H_pos results)")
    if config.get("autocorr"):
        a = config["autocorr"]
        _require(a["density_min"] <= a["density_max"], "autocorr.density_min", "must be <= autocorr.density_max")
