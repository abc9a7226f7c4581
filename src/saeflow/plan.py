"""The plan: every node of the DAG with its key, computed from a validated config at parse time.

Steps and their upstreams (embedded presets):

    corpus(dataset) ─┬─> tokenizer(preset) ─┬─> windows(preset, dataset) ──> lm(preset)
                     └──────────────────────┘                 │                 │
                            cache(preset, dataset) <──────────┴─────────────────┤
                            dict(preset, dataset, layer, dictionary) <── cache  │
                            recon(preset, dataset, layer, dictionary) <── dict, windows, lm
                            recon_summary <── every recon

A node's path is `<store>/<step>/<key>`; Snakemake wires rules by these paths, so a changed key is
simply a missing output, and an unchanged key is found complete whatever the mtimes say.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from saeflow import keys
from saeflow.config import TRANSCODER_KINDS

SCRIPTS = {
    "corpus": "workflow/scripts/corpus.py",
    "tokenizer": "workflow/scripts/tokenizer.py",
    "windows": "workflow/scripts/windows.py",
    "lm": "workflow/scripts/train_lm.py",
    "cache": "workflow/scripts/cache_activations.py",
    "dict": "workflow/scripts/train_dict.py",
    "recon": "workflow/scripts/recon.py",
    "recon_summary": "workflow/scripts/recon_summary.py",
    "entropy": "workflow/scripts/entropy_vs_depth.py",
    "ctxlen_sweep": "workflow/scripts/ctxlen_sweep.py",
    "events": "workflow/scripts/top_contexts.py",
    "h_pos": "workflow/scripts/h_pos.py",
    "locality_plots": "workflow/scripts/locality_plots.py",
    "entropy_grid": "workflow/scripts/entropy_grid.py",
    "probe": "workflow/scripts/probe.py",
    "autocorr": "workflow/scripts/autocorr.py",
    "geometry": "workflow/scripts/geometry.py",
    "eval_plots": "workflow/scripts/eval_plots.py",
}

# mem_mb, runtime (minutes), threads; `gpu` is added for presets on cuda. Scaled by `attempt` in rules.
DEFAULT_RESOURCES = {
    "corpus": {"mem_mb": 2000, "runtime": 10, "threads": 1},
    "tokenizer": {"mem_mb": 2000, "runtime": 10, "threads": 1},
    "windows": {"mem_mb": 2000, "runtime": 10, "threads": 1},
    "lm": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "cache": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "dict": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "recon": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "recon_summary": {"mem_mb": 1000, "runtime": 10, "threads": 1},
    "entropy": {"mem_mb": 8000, "runtime": 120, "threads": 1},
    "ctxlen_sweep": {"mem_mb": 8000, "runtime": 60, "threads": 1},
    "events": {"mem_mb": 4000, "runtime": 60, "threads": 1},
    "h_pos": {"mem_mb": 8000, "runtime": 120, "threads": 1},
    "locality_plots": {"mem_mb": 2000, "runtime": 10, "threads": 1},
    "entropy_grid": {"mem_mb": 2000, "runtime": 10, "threads": 1},
    "probe": {"mem_mb": 8000, "runtime": 60, "threads": 1},
    "autocorr": {"mem_mb": 8000, "runtime": 60, "threads": 1},
    "geometry": {"mem_mb": 4000, "runtime": 30, "threads": 1},
    "eval_plots": {"mem_mb": 2000, "runtime": 10, "threads": 1},
}
GPU_STEPS = ("lm", "cache", "dict", "recon", "entropy", "ctxlen_sweep", "events", "h_pos", "probe", "autocorr")


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

    def to_dict(self) -> dict:
        """What a job receives as its `node` param: the fingerprint enters as the digest the key was
        computed from; the job recomputes the parts for its manifest and checks them against it
        (saeflow.jobs.code_fingerprint), so code edited while a workflow runs cannot be stored under a
        key that does not describe it."""
        out = {k: getattr(self, k) for k in ("step", "key", "params", "upstream", "inputs", "labels", "path")}
        out["code_digest"] = self.fingerprint["digest"]
        return out


@dataclass
class Plan:
    config: dict
    workdir: Path
    nodes: dict[str, Node] = field(default_factory=dict)
    exports: dict[str, tuple[str, str]] = field(default_factory=dict)  # fixed path -> (artefact dir, file in it)
    _fp: keys.Fingerprinter | None = None

    def __post_init__(self):
        self._fp = keys.Fingerprinter(Path(self.workdir) / "src")
        self._fingerprints: dict[str, dict] = {}

    @property
    def store(self) -> str:
        return self.config.get("store", "data/store")

    def fingerprint(self, step: str) -> dict:
        if step not in self._fingerprints:
            self._fingerprints[step] = self._fp.fingerprint(Path(self.workdir) / SCRIPTS[step])
        return self._fingerprints[step]

    def add(self, step: str, params: dict, upstream: dict[str, Node], labels: dict,
            inputs: dict | None = None, device: str = "cpu") -> Node:
        inputs = inputs or {}
        fp = self.fingerprint(step)
        up_keys = {role: n.key for role, n in upstream.items()}
        key = keys.node_key(step, params, up_keys, inputs, fp["digest"])
        if key in self.nodes:
            return self.nodes[key]
        res = dict(DEFAULT_RESOURCES[step])
        res.update(self.config.get("resources", {}).get(step, {}))
        res.setdefault("gpu", 1 if device == "cuda" and step in GPU_STEPS else 0)
        node = Node(step, key, params, up_keys, inputs, labels, fp, res, f"{self.store}/{step}/{key}")
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


def _corpus_inputs(spec: dict) -> dict:
    from saeflow import corpus

    if spec["source"] == "stdlib":
        import platform

        return {"stdlib": corpus.stdlib_identity(spec["packages"], spec.get("max_files"), spec.get("max_bytes", 200_000)),
                "python": platform.python_version()}
    if spec["source"] == "hf":
        return {"hf": corpus.hf_identity(spec["repo"], spec["revision"], spec["split"])}
    return {}  # synthetic: fully described by its params


def build_plan(config: dict, workdir: Path | str) -> Plan:
    """All nodes for a validated config (see saeflow.config.validate)."""
    plan = Plan(config, Path(workdir))
    seed = config.get("seed", 0)
    win_cfg = config["windows"]
    corpora: dict[str, Node] = {}
    for name, spec in config["datasets"].items():
        corpora[name] = plan.add("corpus", {"dataset": name, **spec}, {}, {"dataset": name}, _corpus_inputs(spec))

    recons: dict[str, Node] = {}
    entropies: dict[str, Node] = {}
    for pname, preset in config["presets"].items():
        model = preset["model"]
        device = preset.get("device", "cpu")
        tok = plan.add("tokenizer", {"vocab_size": model["vocab_size"]},
                       {"corpus": corpora[model["train_dataset"]]}, {"preset": pname})

        def windows_for(ds: str) -> Node:
            return plan.add("windows", {"ctx_len": win_cfg["ctx_len"], "n_train": win_cfg["n_train"],
                                        "n_eval": win_cfg["n_eval"], "eval_fraction": config["datasets"][ds]["eval_fraction"],
                                        "seed": seed},
                            {"corpus": corpora[ds], "tokenizer": tok}, {"preset": pname, "dataset": ds})

        lm_params = {k: v for k, v in model.items() if k != "train_dataset"}
        lm_params["n_ctx"] = win_cfg["ctx_len"]
        lm = plan.add("lm", lm_params, {"windows": windows_for(model["train_dataset"]), "tokenizer": tok},
                      {"preset": pname}, device=device)

        dict_specs = {d: config["dictionaries"][d] for d in preset["dictionaries"]}
        needs_mlp = any(s["kind"] in TRANSCODER_KINDS for s in dict_specs.values())
        sites = sorted({hook_name(preset["site"], L) for L in preset["layers"]}
                       | ({hook_name(s, L) for L in preset["layers"] for s in ("mlp_in", "mlp_out")} if needs_mlp else set()))
        for ds in preset["datasets"]:
            win = windows_for(ds)
            cache = plan.add("cache", {"sites": sites, **config["cache"], "device": device},
                             {"lm": lm, "windows": win}, {"preset": pname, "dataset": ds}, device=device)
            dicts_of_ds: dict[tuple[int, str], Node] = {}
            for layer in preset["layers"]:
                for dname, spec in dict_specs.items():
                    transcoder = spec["kind"] in TRANSCODER_KINDS
                    hook_in = hook_name("mlp_in" if transcoder else preset["site"], layer)
                    hook_out = hook_name("mlp_out", layer) if transcoder else None
                    labels = {"preset": pname, "dataset": ds, "layer": layer, "dictionary": dname,
                              "kind": spec["kind"], "site": "mlp" if transcoder else preset["site"]}
                    d = plan.add("dict", {**spec, "d_in": model["d_model"], "d_sae": spec["expansion"] * model["d_model"],
                                          "hook_in": hook_in, "hook_out": hook_out, "device": device},
                                 {"cache": cache}, labels, device=device)
                    dicts_of_ds[(layer, dname)] = d
                    r = plan.add("recon", {**config["recon"], "hook_in": hook_in, "hook_out": hook_out,
                                           "exclude_bos": True, "seed": seed, "device": device},
                                 {"lm": lm, "windows": win, "dict": d}, labels, device=device)
                    recons[f"r{len(recons)}"] = r
            hpos = None
            if config.get("influence"):
                entropy, hpos = _add_locality(plan, config, pname, ds, preset, lm, win, cache, corpora[ds],
                                              dicts_of_ds, device)
                entropies[f"e{len(entropies)}"] = entropy
            _add_evals(plan, config, pname, ds, preset, lm, win, dicts_of_ds, hpos, device)
    figures = config.get("figures_dir", "figures")
    summary = plan.add("recon_summary", {}, recons, {})
    plan.exports[f"{figures}/recon_summary.png"] = (summary.path, "recon_summary.png")
    if entropies:
        grid = plan.add("entropy_grid", {"kind": config["influence"]["grid_kind"]}, entropies, {})
        plan.exports[f"{figures}/entropy_vs_depth_grid.png"] = (grid.path, "entropy_vs_depth_grid.png")
    return plan


def _add_locality(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, win: Node, cache: Node,
                  corpus: Node, dicts: dict, device: str) -> Node:
    """entropy vs depth, context-length sweep, top contexts and H_pos of one (preset, dataset), plus their
    figures; returns the entropy node (an input of the cross-model grid) and the H_pos node."""
    inf = config["influence"]
    ctx_len = config["windows"]["ctx_len"]
    layers = preset["layers"]
    by_layer = {f"dict_L{L}": dicts[(L, inf["dictionary"])] for L in layers}
    labels = {"preset": pname, "dataset": ds, "dictionary": inf["dictionary"], "site": preset["site"]}
    common = {"threshold": preset["threshold"], "layers": layers, "site": preset["site"], "device": device,
              "memory_budget_mb": inf["memory_budget_mb"], "n_layers": preset["model"]["n_layers"]}
    up = {"lm": lm, "windows": win, **by_layer}
    entropy = plan.add("entropy", {**common, "n_windows": inf["n_windows"], "seed": config.get("seed", 0),
                                   "token_vector": inf["token_vector"]}, up, labels, device=device)
    sweep = plan.add("ctxlen_sweep", {**common, "lengths": list(range(inf["sweep_min"], ctx_len + 1, inf["sweep_step"]))},
                     up, labels, device=device)
    events = plan.add("events", {"layers": layers, "k": inf["top_k_events"], "min_pos": max(inf["ctx_lens"]) - 1,
                                 "positions_per_window": ctx_len - 1, "device": device},
                      {"cache": cache, **by_layer}, labels, device=device)
    hpos = plan.add("h_pos", {**common, "ctx_lens": sorted(inf["ctx_lens"]), "n_latents": inf["n_latents"]},
                    {**up, "events": events, "corpus": corpus}, labels, device=device)
    plots = plan.add("locality_plots", {"ctx_len": ctx_len}, {"entropy": entropy, "sweep": sweep, "h_pos": hpos}, labels)
    fig = f"entropy_vs_depth__{pname}__{ds}.png"
    plan.exports[f"{config.get('figures_dir', 'figures')}/{fig}"] = (plots.path, fig)
    return entropy, hpos


def _add_evals(plan: Plan, config: dict, pname: str, ds: str, preset: dict, lm: Node, win: Node, dicts: dict,
               hpos: Node | None, device: str) -> None:
    """Sparse probing, activation autocorrelation and decoder geometry of one (preset, dataset), and their
    figures (one plotting node, so a plotting fix reruns no computation)."""
    layers = preset["layers"]
    labels = {"preset": pname, "dataset": ds}
    evals = {}
    spec = config["datasets"][ds]
    if config.get("probe") and (spec["source"] != "hf" or spec.get("label_column")):  # probing needs labels
        pr = config["probe"]
        up = {f"dict_L{L}_{d}": dicts[(L, d)] for L in layers for d in pr["dictionaries"]}
        evals["probe"] = plan.add("probe", {**pr, "layers": layers, "seed": config.get("seed", 0), "device": device},
                                  {"lm": lm, "windows": win, **up}, labels, device=device)
    if config.get("influence"):
        by_layer = {f"dict_L{L}": dicts[(L, config["influence"]["dictionary"])] for L in layers}
        if config.get("autocorr"):
            evals["autocorr"] = plan.add("autocorr", {**config["autocorr"], "layers": layers, "device": device,
                                                      "threshold": preset["threshold"]},
                                         {"lm": lm, "windows": win, "h_pos": hpos, **by_layer}, labels, device=device)
        if config.get("geometry"):
            evals["geometry"] = plan.add("geometry", {**config["geometry"], "layers": layers, "seed": config.get("seed", 0)},
                                         {"h_pos": hpos, **by_layer}, labels)
    if evals:
        plots = plan.add("eval_plots", {}, evals, labels)
        for name in evals:
            fig = f"{name}__{pname}__{ds}.png"
            plan.exports[f"{config.get('figures_dir', 'figures')}/{fig}"] = (plots.path, fig)

