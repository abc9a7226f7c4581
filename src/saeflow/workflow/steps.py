"""The step registry: one declaration per step of the DAG.

A step has one name, used for everything: the rule in `rules/<stage>.smk`, its script
`workflow/scripts/<name>.py`, its store folder `<store>/<name>/<key>/`, its logs `<data>/logs/<name>/` and
benchmarks `<data>/benchmarks/<name>/`, the plan's nodes (`saeflow.workflow.plan`), the config's
`resources:` keys, and its folder in the published tree. The registry also says what a step asks of a
machine (default resources, whether it wants a GPU on a CUDA preset, whether it runs in the main process as
a Snakemake `localrule`) and what it publishes. The Snakefile takes its `localrules` from here, the plan its
scripts and resources, publish its layout; `tests/test_steps.py` fails when a rule, a script and an entry
disagree.

Stages, in pipeline order (one rules file each): data, models, dictionaries, evals, report, hub.
"""

from __future__ import annotations

from dataclasses import dataclass

STAGES = ("data", "models", "dictionaries", "evals", "report", "hub")


@dataclass(frozen=True)
class Step:
    name: str
    stage: str                      # rules/<stage>.smk; the library subpackage saeflow.<stage> holds its code
    doc: str                        # one line: what the step computes
    mem_mb: int = 2000
    runtime: int = 10               # minutes; mem_mb and runtime are scaled by `attempt` on retries
    threads: int = 1
    gpu: bool = False               # asks for a GPU when its preset has `device: cuda`
    local: bool = False             # a Snakemake localrule: runs in the main process, never as a cluster job
    keyed: bool = True              # writes a content-addressed artefact <store>/<name>/<key>/
    script: bool = True             # workflow/scripts/<name>.py
    publish: str | None = None      # its folder in a published run (None: not published); see publish_top
    publish_top: tuple[str, ...] = ()  # file name prefixes that go to the top of the run directory instead
    ledger: bool = False            # its headline is a row of the results ledger (saeflow.report.ledger)

    @property
    def script_path(self) -> str | None:
        return f"workflow/scripts/{self.name}.py" if self.script else None

    @property
    def resources(self) -> dict:
        return {"mem_mb": self.mem_mb, "runtime": self.runtime, "threads": self.threads}


STEPS: dict[str, Step] = {s.name: s for s in (
    # data
    Step("corpus", "data", "one dataset's documents as Parquet (stdlib, synthetic, Hugging Face)"),
    Step("windows", "data", "tokenised documents split train/eval, seeded ctx_len windows starting with BOS"),
    Step("cache_activations", "data", "every site of a preset cached from one forward per batch, sharded",
         mem_mb=4000, runtime=60, gpu=True),
    # models
    Step("tokenizer", "models", "the embedded presets' byte-level BPE, trained on the preset's corpus"),
    Step("train_lm", "models", "the embedded HookedTransformer, trained; held-out loss vs unigram entropy",
         mem_mb=4000, runtime=60, gpu=True),
    Step("hf_tokenizer", "models", "a hub preset's tokenizer at its pinned revision"),
    Step("hf_model", "models", "a hub preset's model resolved (config checked, source.json)", runtime=30),
    Step("randomize_lm", "models", "a preset's model re-initialised (seeded), the randomized-model control",
         mem_mb=4000, runtime=30, gpu=True),
    # dictionaries
    Step("train_dict", "dictionaries", "a dictionary trained on cached activations, converted, fidelity-checked, gated",
         mem_mb=4000, runtime=60, gpu=True),
    Step("load_dict", "dictionaries", "a pretrained dictionary loaded, converted, fidelity-checked, gated",
         mem_mb=16000, runtime=60, gpu=True),
    # evals
    Step("recon", "evals", "FVU/EV, L0, dead/dense fractions, spliced CE and KL with bootstrap CIs",
         mem_mb=4000, runtime=60, gpu=True, publish="recon", ledger=True),
    Step("entropy_vs_depth", "evals", "feature-influence entropy of every active latent per window and layer",
         mem_mb=8000, runtime=120, gpu=True, publish="entropy_vs_depth", publish_top=("entropy_comparison_",)),
    Step("ctxlen_sweep", "evals", "per-latent entropy of one fixed text vs context length",
         mem_mb=8000, runtime=60, gpu=True, publish="ctxlen_sweep"),
    Step("top_contexts", "evals", "top-activating events per latent (at most one per window)",
         mem_mb=4000, runtime=60, gpu=True, publish="top_contexts"),
    Step("h_pos", "evals", "H_pos on the window ending at each top event, per context length",
         mem_mb=8000, runtime=120, gpu=True, publish="h_pos"),
    Step("probe", "evals", "sparse probing of dictionary latents vs the raw-activation baseline",
         mem_mb=8000, runtime=60, gpu=True, publish="probe", ledger=True),
    Step("autocorr", "evals", "per-latent activation autocorrelation, top examples, peak strips",
         mem_mb=8000, runtime=60, gpu=True, publish="autocorr"),
    Step("steer", "evals", "a latent's direction added over an alpha sweep vs diff-of-means and random controls",
         mem_mb=8000, runtime=120, gpu=True, publish="steer", ledger=True),
    Step("saebench", "evals", "SAEBench's sparse probing of one task: balanced one-vs-rest probes of every class, SAE vs raw",
         mem_mb=8000, runtime=60, gpu=True, publish="saebench", ledger=True),
    Step("circuit", "evals", "sparse feature-circuit faithfulness vs random latent sets, and its ablation vs seeded nulls",
         mem_mb=8000, runtime=60, gpu=True, publish="circuit", ledger=True),
    Step("compare", "evals", "head-to-head verdicts of two dictionaries: paired bootstrap of every shared headline",
         mem_mb=2000, runtime=10, publish="compare"),
    Step("feature_diff", "evals", "latents of one preset's dictionary that another's lacks (activation correlation)",
         mem_mb=4000, runtime=30, gpu=True),
    Step("autointerp", "evals", "explanations of sampled latents scored by detection and fuzzing, with a shuffled-explanation control",
         mem_mb=8000, runtime=60, gpu=True, publish="autointerp", ledger=True),
    Step("geometry", "evals", "decoder cosine vs |dH_pos| with a permutation null", mem_mb=4000, runtime=30,
         publish="geometry"),
    # report
    Step("recon_summary", "report", "every recon node's headline numbers and the summary figure", mem_mb=1000,
         local=True),
    Step("locality_plots", "report", "entropy vs depth, per-layer, ctx-sweep and H_pos figures of one run",
         local=True, publish="locality_plots", publish_top=("entropy_plots_",)),
    Step("entropy_grid", "report", "the cross-model entropy-vs-depth grid", local=True),
    Step("eval_plots", "report", "the probing, circuit, steering, autocorrelation and geometry figures of one run", local=True,
         publish="eval_plots"),
    Step("inspect", "report", "the feature page of one dictionary at one layer: latents table and cards (self-contained HTML)",
         mem_mb=4000, runtime=30, gpu=True, publish="inspect"),
    Step("inspect_index", "report", "the index of a run's feature pages, every dictionary and layer", mem_mb=500,
         local=True, publish="inspect_index"),
    Step("publish", "report", "the layout, run_config.json and bench.json of one published run", mem_mb=1000,
         local=True),
    Step("ledger", "report", "the results ledger: every eval headline with its CI, provenance and verdict", mem_mb=1000,
         local=True),
    Step("dataset_card", "report", "the Hugging Face dataset card (data/README.md)", mem_mb=1000, local=True),
    Step("export", "report", "a copy of one artefact's figure in figures/, shown by `snakemake --report`",
         mem_mb=200, runtime=5, local=True, keyed=False),
    Step("publish_file", "report", "a copy of one artefact file at a fixed path of the published tree (data/figures/, "
         "data/README.md, data/LEDGER.md, data/ledger.*)", mem_mb=200, runtime=5, local=True, keyed=False),
    Step("publish_run", "report", "data/<preset>/<dataset>/<timestamp>/ materialised from a publish artefact",
         mem_mb=500, local=True, keyed=False),
    # hub
    Step("sync_push", "hub", "data/ uploaded to the config's Hugging Face dataset repo (`saeflow sync push`)",
         local=True, keyed=False, script=False),
)}

KEYED = tuple(n for n, s in STEPS.items() if s.keyed)
LEDGER = tuple(n for n, s in STEPS.items() if s.ledger)
LOCAL = tuple(n for n, s in STEPS.items() if s.local)


def step(name: str) -> Step:
    if name not in STEPS:
        raise KeyError(f"unknown step {name!r}; the steps are {', '.join(STEPS)} (saeflow.workflow.steps)")
    return STEPS[name]
