"""The plan: every node of the DAG with its key, computed from a validated config at parse time.

Steps and their upstreams (embedded presets):

    corpus(dataset) ─┬─> tokenizer(preset) ─┬─> windows(preset, dataset) ──> lm(preset)
                     └──────────────────────┘                 │                 │
                            cache(preset, dataset) <──────────┴─────────────────┤
                            dict(preset, dataset, layer, dictionary) <── cache  │
                            recon(preset, dataset, layer, dictionary) <── dict, windows, lm
                            recon_summary <── every recon

A control preset (`<preset>-randomized`, from `controls: [randomized]`) shares its base preset's tokenizer,
windows and LM nodes; randomize_lm(lm) takes the LM's place for every node from the cache on.

A node's path is `<store>/<step>/<key>`; Snakemake wires rules by these paths, so a changed key is
simply a missing output, and an unchanged key is found complete whatever the mtimes say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from saeflow.workflow import keys
from saeflow.workflow.config import RANDOMIZED_INIT, TRANSCODER_KINDS, influence_dictionary, trained_width
from saeflow.workflow.steps import LEDGER as LEDGER_STEPS
from saeflow.workflow.steps import step as registry_step


# The top_contexts scan's settings where no section names them (the schema's inspect defaults): events per latent
# and histogram bins.
SCAN_TOP_K = 20
SCAN_HIST_BINS = 24


def hook_name(site: str, layer: int) -> str:
    """TransformerLens hook name of a site at a layer."""
    names = {
        "resid_post": f"blocks.{layer}.hook_resid_post",
        "resid_pre": f"blocks.{layer}.hook_resid_pre",
        "mlp_in": f"blocks.{layer}.ln2.hook_normalized",
        "mlp_out": f"blocks.{layer}.hook_mlp_out",
    }
    if site not in names:
        raise ValueError(f"unknown site {site!r}; allowed values: {', '.join(names)}")
    return names[site]


@dataclass
class Node:
    step: str
    key: str
    params: dict
    upstream: dict[str, str]       # role -> key
    inputs: dict                   # identity of raw inputs
    labels: dict                   # human-readable coordinates (preset, dataset, layer, ...)
    fingerprint: dict
    resources: dict
    path: str
    runtime: dict = field(default_factory=dict)  # where raw inputs are on this machine: not part of the key

    @property
    def target(self) -> str:
        """What Snakemake builds for this node (rule outputs are artefact manifests): `<path>/manifest.json`."""
        return f"{self.path}/manifest.json"

    def to_dict(self) -> dict:
        """What a job receives as its `node` param: the fingerprint enters as the digest the key was
        computed from; the job recomputes the parts for its manifest and checks them against it
        (saeflow.workflow.jobs.code_fingerprint), so code edited while a workflow runs cannot be stored under a
        key that does not describe it."""
        out = {k: getattr(self, k) for k in ("step", "key", "params", "upstream", "inputs", "labels", "path", "runtime")}
        out["code_digest"] = self.fingerprint["digest"]
        out["script"] = registry_step(self.step).script_path
        return out


@dataclass
class Plan:
    config: dict
    workdir: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    exports: dict[str, tuple[str, str]] = field(default_factory=dict)  # fixed path -> (artefact dir, file in it)
    published: dict[str, str] = field(default_factory=dict)  # run marker path -> publish node key
    _fp: keys.Fingerprinter | None = None

    def __post_init__(self):
        self._fp = keys.Fingerprinter(Path(self.workdir) / "src")
        self._fingerprints: dict[str, dict] = {}

    @property
    def store(self) -> str:
        return self.config.get("store", "data/store")

    @property
    def data_root(self) -> str:
        """Root of the published tree (`<data_root>/<preset>/<dataset>/<timestamp>/`): the store's parent."""
        return str(Path(self.store).parent)

    def export(self, name: str, node: Node, data_copy: bool = True) -> None:
        """Export file `name` of a node to `<figures_dir>/name` and, for the published tree's cross-model
        figures, to `<data_root>/figures/name`."""
        self.exports[f"{self.config.get('figures_dir', 'figures')}/{name}"] = (node.path, name)
        if data_copy and self.config.get("publish"):
            self.exports[f"{self.data_root}/figures/{name}"] = (node.path, name)

    def fingerprint(self, step: str) -> dict:
        if step not in self._fingerprints:
            self._fingerprints[step] = self._fp.fingerprint(Path(self.workdir) / registry_step(step).script_path)
        return self._fingerprints[step]

    def add(self, step: str, params: dict, upstream: dict[str, Node], labels: dict,
            inputs: dict | None = None, device: str = "cpu", runtime: dict | None = None) -> Node:
        """The node of `step` (created once per key). `runtime` says where raw inputs are found on this
        machine (local copies of hub repos); it is passed to the job but never enters the key."""
        inputs = inputs or {}
        fp = self.fingerprint(step)
        up_keys = {role: n.key for role, n in upstream.items()}
        key = keys.node_key(step, params, up_keys, inputs, fp["digest"])
        if key in self.nodes:
            return self.nodes[key]
        declared = registry_step(step)
        res = dict(declared.resources)
        res.update(self.config.get("resources", {}).get(step, {}))
        preset = self.config["presets"].get(labels.get("preset"), {})
        res.update(preset.get("resources", {}).get(step, {}))
        res.setdefault("gpu", 1 if device == "cuda" and declared.gpu else 0)
        res.setdefault("gpu_mem_mb", 0)
        if preset and preset["model"]["source"] == "hf":
            runtime = {**(runtime or {}), "model_local_dirs": {_model_ref(preset["model"]): preset["model"].get("local_dir")}}
        node = Node(step, key, params, up_keys, inputs, labels, fp, res, f"{self.store}/{step}/{key}", runtime or {})
        self.nodes[key] = node
        return node

    def __getitem__(self, key: str) -> Node:
        return self.nodes[key]

    def input_paths(self, key: str) -> dict[str, str]:
        return {role: self.nodes[k].path for role, k in self.nodes[key].upstream.items()}

    def ancestors(self, key: str) -> list[Node]:
        """The node and everything upstream of it, upstream first."""
        order, seen = [], set()

        def visit(k):
            if k in seen:
                return
            seen.add(k)
            for up in self.nodes[k].upstream.values():
                visit(up)
            order.append(self.nodes[k])

        visit(key)
        return order


def _keyed(spec: dict) -> dict:
    """A config block without `local_dir`: where a copy lives on this machine never enters a key."""
    return {k: v for k, v in spec.items() if k != "local_dir"}


def _model_ref(model: dict) -> str:
    """Identity of a hub model: repo and pinned revision (never a local path)."""
    return f"{model['hf_id']}@{model['revision']}"


def _dict_ref(spec: dict, layer: int) -> str:
    """Identity of a pretrained dictionary: format, release, id at the layer, pinned revision."""
    return f"{spec['format']}:{spec['release']}/{spec['id'].format(layer=layer)}@{spec.get('revision')}"


def _corpus_inputs(spec: dict) -> dict:
    from saeflow.data import corpus

    if spec["source"] == "stdlib":
        import platform

        return {"stdlib": corpus.stdlib_identity(spec["packages"], spec.get("max_files"), spec.get("max_bytes", 200_000)),
                "python": platform.python_version()}
    if spec["source"] == "hf":
        return {"hf": corpus.hf_identity(spec["repo"], spec["revision"], spec["split"])}
    return {}  # synthetic: fully described by its params


def build_plan(config: dict, workdir: Path | str) -> Plan:
    """All nodes for a validated config (see saeflow.workflow.config.validate)."""
    plan = Plan(config, Path(workdir))
    seed = config.get("seed", 0)
    win_cfg = config["windows"]
    corpora: dict[str, Node] = {}
    # mixtures last: they read their parts' corpus artefacts (a part is never a mixture: config check)
    for name, spec in sorted(config["datasets"].items(), key=lambda kv: kv[1]["source"] == "mixture"):
        parts = {f"part_{p}": corpora[p] for p in spec.get("parts", [])}
        corpora[name] = plan.add("corpus", {"dataset": name, **_keyed(spec)}, parts,
                                 {"dataset": name}, _corpus_inputs(spec), runtime={"local_dir": spec.get("local_dir")})

    recons: dict[str, Node] = {}
    entropies: dict[str, Node] = {}
    runs: dict[str, Node] = {}
    done: dict[tuple[str, str], dict[str, Node]] = {}  # (preset, dataset) -> its nodes by role
    for pname, preset in config["presets"].items():
        model = preset["model"]
        device = preset.get("device", "cpu")
        if model["source"] == "hf":
            ref = {"hf": _model_ref(model)}
            tok = plan.add("hf_tokenizer", {k: v for k, v in _keyed(model).items() if k != "source"}, {},
                           {"preset": pname}, ref)
        else:
            tok = plan.add("tokenizer", {"vocab_size": model["vocab_size"]},
                           {"corpus": corpora[model["train_dataset"]]}, {"preset": pname})

        def windows_for(ds: str) -> Node:
            filt = config["datasets"][ds].get("window_filter")
            return plan.add("windows", {"ctx_len": win_cfg["ctx_len"], "n_train": win_cfg["n_train"],
                                        "n_eval": win_cfg["n_eval"], "eval_fraction": config["datasets"][ds]["eval_fraction"],
                                        "seed": seed, **({"window_filter": filt} if filt else {}),
                                        # a mixture's parts are its contrast: both splits must hold each
                                        **({"stratify": True} if config["datasets"][ds]["source"] == "mixture" else {})},
                            {"corpus": corpora[ds], "tokenizer": tok}, {"preset": pname, "dataset": ds})

        if model["source"] == "hf":
            lm = plan.add("hf_model", _keyed(model), {"tokenizer": tok},
                          {"preset": pname}, {"hf": _model_ref(model)})
        else:
            lm_params = {k: v for k, v in model.items() if k != "train_dataset"}
            lm_params["n_ctx"] = win_cfg["ctx_len"]
            lm_params["device"] = device
            lm = plan.add("train_lm", lm_params, {"windows": windows_for(model["train_dataset"]), "tokenizer": tok},
                          {"preset": pname}, device=device)
        if preset.get("control"):
            # a control preset shares its base's tokenizer, windows and LM nodes (same keys); from here on
            # every node reads the control model instead
            c = preset["control"]
            lm = plan.add("randomize_lm", {"seed": c["seed"], "init": RANDOMIZED_INIT, "device": device},
                          {"lm": lm, "windows": windows_for(preset["datasets"][0])},
                          {"preset": pname, "control": c["kind"]}, device=device)

        dict_specs = {d: config["dictionaries"][d] for d in preset["dictionaries"]}
        needs_mlp = any(s["kind"] in TRANSCODER_KINDS for s in dict_specs.values())
        sites = sorted({hook_name(preset["site"], L) for L in preset["layers"]}
                       | ({hook_name(s, L) for L in preset["layers"] for s in ("mlp_in", "mlp_out")} if needs_mlp else set()))
        for ds in preset["datasets"]:
            win = windows_for(ds)
            cache = plan.add("cache_activations", {"sites": sites, **config["cache"], "device": device},
                             {"lm": lm, "windows": win}, {"preset": pname, "dataset": ds}, device=device)
            dicts_of_ds: dict[tuple[int, str], Node] = {}
            recons_of_ds: dict[str, Node] = {}
            for layer in preset["layers"]:
                for dname, spec in dict_specs.items():
                    transcoder = spec["kind"] in TRANSCODER_KINDS
                    hook_in = hook_name("mlp_in" if transcoder else preset["site"], layer)
                    hook_out = hook_name("mlp_out", layer) if transcoder else None
                    labels = {"preset": pname, "dataset": ds, "layer": layer, "dictionary": dname,
                              "kind": spec["kind"], "site": "mlp" if transcoder else preset["site"]}
                    if spec["kind"] == "pretrained":
                        d = plan.add("load_dict", {**_keyed(spec), "layer": layer,
                                                    "d_in": model["d_model"], "hook_in": hook_in, "hook_out": None,
                                                    "model_processing": model.get("processing"), "device": device},
                                     {"cache": cache}, labels, {"dictionary": _dict_ref(spec, layer)}, device=device,
                                     runtime={"local_dir": spec.get("local_dir")})
                    else:
                        d = plan.add("train_dict", {**spec, "d_in": model["d_model"], "d_sae": trained_width(spec, model["d_model"]),
                                              "hook_in": hook_in, "hook_out": hook_out, "device": device,
                                              "metadata": _saelens_metadata(config, pname, ds, hook_in, hook_out)},
                                     {"cache": cache}, labels, device=device)
                    dicts_of_ds[(layer, dname)] = d
                    r = plan.add("recon", {**config["recon"], "hook_in": hook_in, "hook_out": hook_out,
                                           "exclude_bos": True, "seed": seed, "device": device},
                                 {"lm": lm, "windows": win, "dict": d}, labels, device=device)
                    recons[f"r{len(recons)}"] = r
                    recons_of_ds[f"recon__{dname}__layer{layer}"] = r
            results = dict(recons_of_ds)
            if config.get("influence"):
                results.update(_add_locality(plan, config, pname, ds, preset, lm, win, cache, corpora[ds],
                                             dicts_of_ds, device))
                entropies[f"e{len(entropies)}"] = results["entropy_vs_depth"]
            if config.get("inspect") or config.get("autointerp"):
                results.update(_add_autointerp(plan, config, pname, ds, preset, win, cache, corpora[ds], dicts_of_ds,
                                               results, device))
            done[(pname, ds)] = {**results, "_windows": win, "_lm": lm,
                                 **{f"_dict_L{L}_{d}": n for (L, d), n in dicts_of_ds.items()}}
            results.update(_add_evals(plan, config, pname, ds, preset, lm, win, corpora[ds], dicts_of_ds,
                                      recons_of_ds, results, device, done))
            if config.get("inspect"):
                results.update(_add_inspect(plan, config, pname, ds, preset, lm, dicts_of_ds, results, device))
            done[(pname, ds)].update(results)
            if config.get("publish"):
                runs[f"p{len(runs)}"] = _add_publish(plan, config, pname, ds, preset, results)
    if config.get("feature_diff"):
        _add_feature_diffs(plan, config, done)
    summary = plan.add("recon_summary", {}, recons, {})
    plan.export("recon_summary.png", summary)
    if entropies:
        grid = plan.add("entropy_grid", {"kind": config["influence"]["grid_kind"]}, entropies, {})
        plan.export("entropy_vs_depth_grid.png", grid)
    ledger = _add_ledger(plan, config)
    if runs:
        card = plan.add("dataset_card", dict(config["publish"]), {**runs, **({"ledger": ledger} if ledger else {})}, {},
                        inputs={"DATASET.md": _file_identity(plan.workdir / "DATASET.md")})
        plan.exports[f"{plan.data_root}/README.md"] = (card.path, "README.md")
    return plan


def _add_ledger(plan: Plan, config: dict) -> Node | None:
    """The results ledger of every eval node of the plan whose step has a ledger headline (saeflow.workflow.steps),
    with the dictionaries they evaluate (roles e<i>, d<i>), exported to <data_root>/LEDGER.md, ledger.parquet and
    ledger.csv. What its rows say of models and datasets comes from the config, as params."""
    evals = [n for n in plan.nodes.values() if n.step in LEDGER_STEPS]
    if not evals:
        return None
    dicts = {k: plan.nodes[k] for n in evals for r, k in n.upstream.items() if r == "dict" or r.startswith("dict_L")}
    used = {(n.labels["preset"], n.labels["dataset"]) for n in evals}
    params = {"references": (config.get("ledger") or {}).get("references", []), "seed": config.get("seed", 0),
              "presets": {p: {"model": _keyed(config["presets"][p]["model"]),
                              **({"control": config["presets"][p]["control"]} if config["presets"][p].get("control") else {})}
                          for p in sorted({p for p, _ in used})},
              "datasets": {d: _keyed(config["datasets"][d]) for d in sorted({d for _, d in used})}}
    node = plan.add("ledger", params, {**{f"e{i}": n for i, n in enumerate(evals)},
                                       **{f"d{i}": n for i, n in enumerate(dicts.values())}}, {})
    for name in ("LEDGER.md", "ledger.parquet", "ledger.csv"):
        plan.exports[f"{plan.data_root}/{name}"] = (node.path, name)
    plan.export("ledger.html", node, data_copy=False)   # for `snakemake --report`
    return node


# TransformerLens processing of a hub preset, as sae-lens' model_from_pretrained_kwargs (saeflow.models.hf)
_PROCESSING_KWARGS = {"none": {}, "default": {"fold_ln": True, "center_writing_weights": True, "center_unembed": True,
                                              "fold_value_biases": True}}


def _saelens_metadata(config: dict, pname: str, ds: str, hook_in: str, hook_out: str | None) -> dict:
    """What a trained dictionary's sae-lens cfg.json says of its use (`metadata`), so that SAEBench, sae-dashboard and
    Neuronpedia load it without edits: the model (TransformerLens name, pinned revision, processing), the hooks, the
    context size and BOS convention of the windows it was trained on, and the dataset (repo and revision)."""
    preset, spec = config["presets"][pname], config["datasets"][ds]
    model = preset["model"]
    hub = model["source"] == "hf"
    md = {"model_name": (model.get("tl_name") or model["hf_id"]) if hub else f"saeflow-embedded/{pname}",
          "model_revision": model["revision"] if hub else None, "hf_model_name": model["hf_id"] if hub else None,
          "model_class_name": "HookedTransformer",
          "model_from_pretrained_kwargs": _PROCESSING_KWARGS[model.get("processing", "none")] if hub else {},
          "hook_name": hook_in, "context_size": config["windows"]["ctx_len"], "prepend_bos": True,
          "dataset_path": spec["repo"] if spec["source"] == "hf" else f"saeflow:{ds}",
          "dataset_revision": spec.get("revision"), "exclude_bos": True}
    return {**md, **({"hook_name_out": hook_out} if hook_out else {})}


def _file_identity(path: Path) -> str:
    from saeflow.workflow.store import sha256_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the dataset card (config key `publish`) is generated from it")
    return sha256_file(path)


def _add_publish(plan: Plan, config: dict, pname: str, ds: str, preset: dict, results: dict[str, Node]) -> Node:
    """The run of one (preset, dataset) in the published tree (saeflow.report.publish): a keyed node that
    decides the layout, and a marker `<data_root>/<preset>/<dataset>/.published/<key>.json` that the
    `publish_run` export writes once the run directory exists."""
    inf = config.get("influence") or {}
    params = {"preset": pname, "dataset": ds, "layers": preset["layers"], "site": preset["site"],
              "threshold": preset["threshold"], "ctx_len": config["windows"]["ctx_len"],
              "num_batches": inf.get("n_windows"), "model": _keyed(preset["model"]),
              "dictionaries": {d: _keyed(config["dictionaries"][d]) for d in preset["dictionaries"]},
              "seed": config.get("seed", 0), **({"control": preset["control"]} if preset.get("control") else {})}
    node = plan.add("publish", params, results, {"preset": pname, "dataset": ds})
    plan.published[f"{plan.data_root}/{pname}/{ds}/.published/{node.key}.json"] = node.key
    return node


def _add_locality(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, win: Node, cache: Node,
                  corpus: Node, dicts: dict, device: str) -> dict[str, Node]:
    """entropy vs depth, context-length sweep, top contexts and H_pos of one (preset, dataset), plus their
    figures; returns the nodes by role (`entropy` is also an input of the cross-model grid)."""
    inf = config["influence"]
    ctx_len = config["windows"]["ctx_len"]
    layers = preset["layers"]
    dname = influence_dictionary(config, pname)
    by_layer = {f"dict_L{L}": dicts[(L, dname)] for L in layers}
    labels = {"preset": pname, "dataset": ds, "dictionary": dname, "site": preset["site"]}
    common = {"threshold": preset["threshold"], "layers": layers, "site": preset["site"], "device": device,
              "memory_budget_mb": inf["memory_budget_mb"], "n_layers": preset["model"]["n_layers"]}
    up = {"lm": lm, "windows": win, **by_layer}
    entropy = plan.add("entropy_vs_depth", {**common, "n_windows": inf["n_windows"], "seed": config.get("seed", 0),
                                   "token_vector": inf["token_vector"]}, up, labels, device=device)
    sweep = plan.add("ctxlen_sweep", {**common, "lengths": list(range(inf["sweep_min"], ctx_len + 1, inf["sweep_step"]))},
                     up, labels, device=device)
    events = _top_contexts(plan, config, win, cache, by_layer, labels, device)
    hpos = plan.add("h_pos", {**common, "ctx_lens": sorted(inf["ctx_lens"]), "n_latents": inf["n_latents"]},
                    {**up, "events": events, "corpus": corpus}, labels, device=device)
    plots = plan.add("locality_plots", {"ctx_len": ctx_len}, {"entropy": entropy, "sweep": sweep, "h_pos": hpos}, labels)
    plan.export(f"entropy_vs_depth__{pname}__{ds}.png", plots)
    return {"entropy_vs_depth": entropy, "ctxlen_sweep": sweep, "top_contexts": events, "h_pos": hpos,
            "locality_plots": plots}


def _top_contexts(plan: Plan, config: dict, win: Node, cache: Node, by_layer: dict[str, Node], labels: dict,
                  device: str) -> Node:
    """The top_contexts node of one dictionary (``by_layer``: its nodes as `dict_L<layer>`), with the same settings
    whichever analysis asks for it (H_pos, feature pages, auto-interp), so that one scan serves all: the influence
    section's events (top_k_events, at positions where the longest H_pos context fits) where there is one, else
    `inspect.top_k` events anywhere after BOS; `inspect.hist_bins` histogram bins; contexts of
    `inspect.context_tokens` around each peak (None: the whole window)."""
    inf, ins = config.get("influence"), config.get("inspect") or {}
    layers = sorted(int(r.removeprefix("dict_L")) for r in by_layer)
    k = inf["top_k_events"] if inf else ins.get("top_k", SCAN_TOP_K)
    min_pos = max(inf["ctx_lens"]) - 1 if inf else 1
    return plan.add("top_contexts", {"layers": layers, "k": k, "min_pos": min_pos,
                                     "positions_per_window": config["windows"]["ctx_len"] - 1,
                                     "n_bins": ins.get("hist_bins", SCAN_HIST_BINS),
                                     "context_tokens": ins.get("context_tokens"), "device": device},
                    {"cache": cache, "windows": win, "tokenizer": plan.nodes[win.upstream["tokenizer"]], **by_layer},
                    labels, device=device)


def _site_label(preset: dict, spec: dict) -> str:
    """The site a dictionary reads, as labels name it: `mlp` for a transcoder, else the preset's site."""
    return "mlp" if spec["kind"] in TRANSCODER_KINDS else preset["site"]


def _dict_labels(preset: dict, pname: str, ds: str, layer: int, dname: str, spec: dict) -> dict:
    return {"preset": pname, "dataset": ds, "layer": layer, "dictionary": dname, "kind": spec["kind"],
            "site": _site_label(preset, spec)}


def _llm_keyed(spec: dict) -> tuple[dict, dict]:
    """(what enters the key, {"<hf_id>@<revision>": local_dir}) of an explainer or scorer spec."""
    if spec["kind"] != "hf":
        return dict(spec), {}
    return _keyed(spec), {f"{spec['hf_id']}@{spec['revision']}": spec.get("local_dir")}


def _add_autointerp(plan: Plan, config: dict, pname: str, ds: str, preset: dict, win: Node, cache: Node, corpus: Node,
                    dicts: dict, results: dict[str, Node], device: str) -> dict[str, Node]:
    """The top_contexts scan of every dictionary the feature pages or auto-interp read (role `top_contexts` for the
    influence dictionary, whose node the locality analyses planned, `top_contexts__<dictionary>` for the others), and
    an `autointerp` node per layer and dictionary of `autointerp.dictionaries` (roles
    `autointerp__<dictionary>__layer<L>`)."""
    layers = preset["layers"]
    wanted = [d for sec in ("inspect", "autointerp") for d in (config.get(sec) or {}).get("dictionaries", [])]
    infl = influence_dictionary(config, pname) if "top_contexts" in results else None
    out: dict[str, Node] = {}
    for d in dict.fromkeys(x for x in wanted if x in preset["dictionaries"]):
        if d != infl:
            labels = {"preset": pname, "dataset": ds, "dictionary": d,
                      "site": _site_label(preset, config["dictionaries"][d])}
            out[f"top_contexts__{d}"] = _top_contexts(plan, config, win, cache,
                                                      {f"dict_L{L}": dicts[(L, d)] for L in layers}, labels, device)
    ai = config.get("autointerp")
    for d in (x for x in (ai or {}).get("dictionaries", []) if x in preset["dictionaries"]):
        events = results["top_contexts"] if d == infl else out[f"top_contexts__{d}"]
        (explainer, ex_dirs), (scorer, sc_dirs) = _llm_keyed(ai["explainer"]), _llm_keyed(ai["scorer"])
        params = {**{k: v for k, v in ai.items() if k not in ("dictionaries", "explainer", "scorer")},
                  "explainer": explainer, "scorer": scorer, "positions_per_window": config["windows"]["ctx_len"] - 1,
                  "seed": config.get("seed", 0), "device": device}
        for L in layers:
            spec = config["dictionaries"][d]
            out[f"autointerp__{d}__layer{L}"] = plan.add(
                "autointerp", {**params, "layer": L},
                {"cache": cache, "windows": win, "tokenizer": plan.nodes[win.upstream["tokenizer"]], "dict": dicts[(L, d)],
                 "events": events, "corpus": corpus},
                _dict_labels(preset, pname, ds, L, d, spec), device=device,
                runtime={"llm_local_dirs": {**ex_dirs, **sc_dirs}})
    return out


def _add_inspect(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, dicts: dict,
                 results: dict[str, Node], device: str) -> dict[str, Node]:
    """An `inspect` node (feature page) per layer and dictionary of `inspect.dictionaries` (roles
    `inspect__<dictionary>__layer<L>`), reading its top_contexts scan and, where they exist for that dictionary,
    the H_pos, autocorrelation and auto-interp results; and the run's `inspect_index`."""
    ins = config["inspect"]
    infl = influence_dictionary(config, pname) if "top_contexts" in results else None
    out: dict[str, Node] = {}
    for d in (x for x in ins["dictionaries"] if x in preset["dictionaries"]):
        spec = config["dictionaries"][d]
        for L in preset["layers"]:
            up = {"events": results["top_contexts"] if d == infl else results[f"top_contexts__{d}"],
                  "dict": dicts[(L, d)], "lm": lm}
            if d == infl:
                up.update({r: results[r] for r in ("h_pos", "autocorr") if r in results})
            if f"autointerp__{d}__layer{L}" in results:
                up["autointerp"] = results[f"autointerp__{d}__layer{L}"]
            params = {**{k: v for k, v in ins.items() if k != "dictionaries"}, "layer": L,
                      "hook_in": plan.nodes[dicts[(L, d)].key].params["hook_in"], "seed": config.get("seed", 0),
                      "device": device}
            out[f"inspect__{d}__layer{L}"] = plan.add("inspect", params, up, _dict_labels(preset, pname, ds, L, d, spec),
                                                      device=device)
    if out:
        out["inspect_index"] = plan.add("inspect_index", {}, dict(out), {"preset": pname, "dataset": ds})
    return out


def _compare_node(plan: Plan, config: dict, kind: str, arms: list[tuple[str, str, str, dict]],
                  pairs: list[tuple[int, int]], layers: list, labels: dict) -> Node:
    """A `compare` node of arms (preset, dictionary, label, that (preset, dataset)'s nodes by role): recon per
    layer, and the probe / h_pos / autointerp nodes where the arm's dictionary is in them."""
    up = {}
    for i, (p, d, _, nodes) in enumerate(arms):
        up.update({f"recon_L{L}_a{i}": nodes[f"recon__{d}__layer{L}"] for L in layers})
        if "probe" in nodes and d in nodes["probe"].params["dictionaries"]:
            up[f"probe_a{i}"] = nodes["probe"]
        if "h_pos" in nodes and influence_dictionary(config, p) == d:
            up[f"h_pos_a{i}"] = nodes["h_pos"]
        up.update({f"autointerp_L{L}_a{i}": nodes[f"autointerp__{d}__layer{L}"] for L in layers
                   if f"autointerp__{d}__layer{L}" in nodes})
    params = {"n_resamples": 1000, "confidence": 0.95, **{k: v for k, v in (config.get("compare") or {}).items()
                                                          if k != "dictionaries"},
              "kind": kind, "arms": [{"preset": p, "dictionary": d, "label": lab} for p, d, lab, _ in arms],
              "pairs": [list(pr) for pr in pairs], "layers": layers, "seed": config.get("seed", 0)}
    return plan.add("compare", params, up, labels)


def _add_control_comparison(plan: Plan, config: dict, pname: str, ds: str, preset: dict,
                            done: dict) -> dict[str, Node]:
    """Each dictionary of a control preset against the same dictionary of its base preset (A: the trained
    model, B: the control), as a `compare` node in the role `control`."""
    base, kind = preset["control"]["of"], preset["control"]["kind"]
    arms = []
    for d in preset["dictionaries"]:
        arms += [(base, d, d, done[(base, ds)]), (pname, d, f"{d} ({kind})", done[(pname, ds)])]
    pairs = [(2 * i, 2 * i + 1) for i in range(len(preset["dictionaries"]))]
    return {"control": _compare_node(plan, config, "control", arms, pairs, preset["layers"],
                                     {"preset": pname, "dataset": ds})}


def _add_feature_diffs(plan: Plan, config: dict, done: dict) -> None:
    """A `feature_diff` node per pair [A, B] and dataset both list, over their shared layers, with its figure
    (a cross-model figure: figures/ and data/figures/). A and B must cut the same windows."""
    from saeflow.workflow.config import ConfigError

    fdc = config["feature_diff"]
    presets = config["presets"]
    d = fdc["dictionary"]
    for a, b in fdc["pairs"]:
        for ds in [x for x in presets[a]["datasets"] if x in presets[b]["datasets"]]:
            na, nb = done[(a, ds)], done[(b, ds)]
            if na["_windows"].key != nb["_windows"].key:
                raise ConfigError(f"config key 'feature_diff.pairs': {a!r} and {b!r} cut different windows of {ds!r} "
                                  "(different tokenizers); required: presets of one tokenizer (same train_dataset and "
                                  "vocab_size, or one hub tokenizer)")
            layers = [L for L in presets[a]["layers"] if L in presets[b]["layers"]]
            device = presets[a].get("device", "cpu")
            up = {"lm_a": na["_lm"], "lm_b": nb["_lm"], "windows": na["_windows"],
                  **{f"dict_a_L{L}": na[f"_dict_L{L}_{d}"] for L in layers},
                  **{f"dict_b_L{L}": nb[f"_dict_L{L}_{d}"] for L in layers}}
            params = {k: v for k, v in fdc.items() if k != "pairs"}
            node = plan.add("feature_diff", {**params, "presets": [a, b], "layers": layers, "device": device}, up,
                            {"preset": a, "dataset": ds, "other": b, "dictionary": d}, device=device)
            plan.export(f"feature_diff__{a}__{b}__{ds}.png", node)


def _add_saebench(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, win: Node, dicts: dict,
                  labels: dict, device: str) -> dict[str, Node]:
    """A `saebench` node per task of the (preset, dataset) (roles `saebench__<task>`): the tasks on this dataset, and
    the Hugging Face tasks on the preset's first dataset's run; each over every layer and listed SAE."""
    import re

    from saeflow.data.saebench_sets import BALANCE_COLUMNS

    sb = config.get("saebench")
    probed = [d for d in (sb or {}).get("dictionaries", []) if d in preset["dictionaries"]]
    if not probed:
        return {}
    out = {}
    for task in sb["tasks"]:
        if task.get("dataset", ds if ds == preset["datasets"][0] else None) != ds:
            continue
        layers = preset["layers"]
        # SAEBench balances its two-column datasets by their second column whether or not the config names it
        keyed = {**_keyed(task), "balance_column": task.get("balance_column") or BALANCE_COLUMNS.get(task["repo"])} \
            if "repo" in task else task
        params = {**{k: v for k, v in sb.items() if k not in ("dictionaries", "tasks")}, "task": keyed,
                  "dictionaries": probed, "layers": layers, "device": device}
        up = {"lm": lm, "tokenizer": plan.nodes[win.upstream["tokenizer"]],
              **({"windows": win} if "dataset" in task else {}),
              **{f"dict_L{L}_{d}": dicts[(L, d)] for L in layers for d in probed}}
        inputs = {"hf": f"{task['repo']}@{task['revision']}"} if "repo" in task else None
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", task["name"])
        out[f"saebench__{slug}"] = plan.add("saebench", params, up, {**labels, "task": task["name"]}, inputs,
                                            device=device, runtime={"local_dir": task.get("local_dir")})
    return out


def _add_evals(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, win: Node, corpus: Node,
               dicts: dict, recons: dict, earlier: dict[str, Node], device: str, done: dict) -> dict[str, Node]:
    """Sparse probing, circuits, steering, head-to-head comparisons, activation autocorrelation and decoder
    geometry of one (preset, dataset), and their figures and auto-interp's (one plotting node, so a plotting fix reruns no
    computation); returns the nodes by role. ``recons``: the recon nodes by `recon__<dictionary>__layer<L>`;
    ``earlier``: the (preset, dataset)'s nodes planned before (h_pos, the autointerp nodes, whose figure is drawn
    here and which `compare` reads); ``done``: the nodes by role of every (preset, dataset) planned so far (a
    control preset is compared with its base, planned before it)."""
    layers = preset["layers"]
    labels = {"preset": pname, "dataset": ds}
    evals = {}
    hpos = earlier.get("h_pos")
    scored = {r: n for r, n in earlier.items() if r.startswith("autointerp__")}
    spec = config["datasets"][ds]
    labelled = spec["source"] != "hf" or spec.get("label_column")  # probing and a steering contrast need labels
    probed = [d for d in (config.get("probe") or {}).get("dictionaries", []) if d in preset["dictionaries"]]
    if probed and labelled:
        pr = {**config["probe"], "dictionaries": probed}
        up = {f"dict_L{L}_{d}": dicts[(L, d)] for L in layers for d in probed}
        evals["probe"] = plan.add("probe", {**pr, "layers": layers, "seed": config.get("seed", 0), "device": device},
                                  {"lm": lm, "windows": win, **up}, labels, device=device)
    evals.update(_add_saebench(plan, config, pname, ds, preset, lm, win, dicts, labels, device))
    circ = config.get("circuit")
    if circ and circ["dictionary"] in preset["dictionaries"] and labelled:
        up = {f"dict_L{L}": dicts[(L, circ["dictionary"])] for L in layers}
        evals["circuit"] = plan.add("circuit", {**circ, "layers": layers, "seed": config.get("seed", 0), "device": device},
                                    {"lm": lm, "windows": win, **up}, {**labels, "dictionary": circ["dictionary"]},
                                    device=device)
    steer = config.get("steer")
    if steer and steer["dictionary"] in preset["dictionaries"] and labelled:
        L = {"first": layers[0], "last": layers[-1]}.get(steer["layer"], steer["layer"])
        params = {**{k: v for k, v in steer.items() if k != "layer"}, "layer": L, "seed": config.get("seed", 0),
                  "device": device}
        evals["steer"] = plan.add("steer", params, {"lm": lm, "windows": win, "corpus": corpus,
                                                    "dict": dicts[(L, steer["dictionary"])]},
                                  {**labels, "layer": L, "dictionary": steer["dictionary"]}, device=device)
    compared = [d for d in (config.get("compare") or {}).get("dictionaries", []) if d in preset["dictionaries"]]
    if len(compared) >= 2:
        here = {**recons, **evals, **scored}
        arms = [(pname, d, d, here) for d in compared]
        pairs = [(i, j) for i in range(len(arms)) for j in range(i + 1, len(arms))]
        evals["compare"] = _compare_node(plan, config, "dictionaries", arms, pairs, layers, labels)
    if preset.get("control"):
        done[(pname, ds)] = {**done.get((pname, ds), {}), **recons, **evals, **scored}
        evals.update(_add_control_comparison(plan, config, pname, ds, preset, done))
    if config.get("influence"):
        infl = influence_dictionary(config, pname)
        by_layer = {f"dict_L{L}": dicts[(L, infl)] for L in layers}
        if config.get("autocorr"):
            evals["autocorr"] = plan.add("autocorr", {**config["autocorr"], "layers": layers, "device": device,
                                                      "threshold": preset["threshold"]},
                                         {"lm": lm, "windows": win, "h_pos": hpos, **by_layer},
                                         {**labels, "dictionary": infl}, device=device)
        if config.get("geometry"):
            evals["geometry"] = plan.add("geometry", {**config["geometry"], "layers": layers, "seed": config.get("seed", 0)},
                                         {"h_pos": hpos, **by_layer}, {**labels, "dictionary": infl})
    if evals or scored:
        plots = plan.add("eval_plots", {}, {**evals, **scored}, labels)
        for name in dict.fromkeys(role.split("__")[0] for role in (*evals, *scored)):
            plan.export(f"{name}__{pname}__{ds}.png", plots)
        evals["eval_plots"] = plots
    return evals

