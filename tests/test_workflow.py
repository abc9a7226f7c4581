"""End-to-end workflow tests through the Snakemake CLI on a temporary copy of the workflow.

The tests of this module share one copy (module fixture) and run in file order: the full DAG runs
once, then every rerun property of spec/architecture.md is checked against it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import science
import yaml
from browser import BrowserUnavailable, ensure_chromium, open_page
from readme import run_readme_command

from saeflow.workflow import config as cfg
from saeflow.workflow import store
from saeflow.workflow.plan import build_plan

pytestmark = pytest.mark.workflow
ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "DATASET.md", "rules", "workflow", "src/saeflow", "config", "envs", "profiles", "report",
        "tests/configs"]
CONFIG = "tests/configs/tiny.yaml"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPARSIFY_DISABLE_TRITON": "1",
       "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--configfile", CONFIG]


def copy_workflow(dst: Path, root: Path = ROOT) -> Path:
    for rel in COPY:
        src = root / rel
        if src.is_dir():
            shutil.copytree(src, dst / rel, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def run(wd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run([*SNAKEMAKE, "--cores", "2", *args], cwd=wd, env=ENV, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{res.stdout[-4000:]}\n{res.stderr[-6000:]}")
    return res


def planned(wd: Path, *args: str) -> dict[str, int]:
    """{rule: count} of the jobs a dry run would execute ({} when nothing is to be done)."""
    out = run(wd, "-n", *args).stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


def saeflow_status(wd: Path, target: str = "all") -> str:
    res = subprocess.run([sys.executable, "-m", "saeflow.cli", "status", target, "--configfile", CONFIG],
                         cwd=wd, env={**ENV, "PYTHONPATH": str(wd / "src")}, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return res.stdout


def plans_after_edit(wd: Path, rel: str, addition: str) -> dict[str, int]:
    """Jobs planned after appending `addition` to a file; the file is restored and must plan nothing."""
    path = wd / rel
    original = path.read_text()
    path.write_text(original + addition)
    try:
        return planned(wd)
    finally:
        path.write_text(original)
        assert planned(wd) == {}


def stat_of(paths) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}


def files_of(wd: Path, step: str) -> list[Path]:
    return sorted(p for p in (wd / "data/store" / step).rglob("*") if p.is_file())


PUBLISH = {"publish": 1, "publish_run": 1, "dataset_card": 1}
# recon_summary.png and eval_plots' seven figures go to figures/ (export) and data/figures/ (publish_file), the
# dataset card to data/README.md; compare pairs the recon tables, so its node and figure follow a recon edit. The
# results ledger reads every recon node: it reruns, with its page in figures/ and data/LEDGER.md, ledger.parquet and
# ledger.csv.
RECON_DOWN = {"recon": 3, "recon_summary": 1, "compare": 1, "eval_plots": 1, "ledger": 1, **PUBLISH, "export": 9,
              "publish_file": 12, "all": 1}


# The README's everyday commands, run as written in this module's copy, where the tiny config is also the
# default config (so `snakemake` without --configfile plans exactly what `run` plans).
README_COMMANDS = ["snakemake -n", "saeflow status figures/recon_summary.png", "saeflow ledger",
                   "snakemake --report report.zip", "saeflow verify",
                   "saeflow verify --remove", "snakemake figures/entropy_vs_depth_grid.png", "snakemake --unlock",
                   "snakemake"]


def readme(wd: Path, cmd: str) -> subprocess.CompletedProcess:
    res = run_readme_command(cmd, wd, {**ENV, "PYTHONPATH": str(wd / "src")})
    assert res.returncode == 0, f"{cmd}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def set_config(wd: Path, text: str) -> None:
    """The test config, and the default config the README's commands read, kept identical."""
    (wd / CONFIG).write_text(text)
    (wd / "config" / "config.yaml").write_text(text)


@pytest.fixture(scope="module")
def wd(tmp_path_factory):
    wd = copy_workflow(tmp_path_factory.mktemp("wf"))
    set_config(wd, (wd / CONFIG).read_text())
    t0 = time.time()
    run(wd)
    print(f"full tiny DAG: {time.time() - t0:.1f} s")
    return wd


def test_full_dag_runs_figure_exists_manifests_verify(wd):
    assert (wd / "figures/recon_summary.png").stat().st_size > 10_000
    arts = list(store.iter_artefacts(wd / "data/store"))
    assert {a.parent.name for a in arts} == {"corpus", "tokenizer", "windows", "train_lm", "cache_activations", "train_dict", "recon",
                                             "recon_summary", "entropy_vs_depth", "ctxlen_sweep", "top_contexts", "h_pos",
                                             "locality_plots", "entropy_grid", "probe", "circuit", "compare", "autocorr", "geometry",
                                             "eval_plots", "publish", "dataset_card", "autointerp", "inspect", "inspect_index",
                                             "ledger", "saebench"}
    for fig in ("recon_summary.png", "entropy_vs_depth_grid.png", "entropy_vs_depth__t__synthetic.png",
                "probe__t__synthetic.png", "autocorr__t__synthetic.png", "geometry__t__synthetic.png",
                "autointerp__t__synthetic.png", "saebench__t__synthetic.png"):
        assert (wd / "figures" / fig).stat().st_size > 10_000
    assert store.verify_store(wd / "data/store") == {}
    for a in arts:
        assert store.read_manifest(a)["key"] == a.name
    # Every rule wrote its log and benchmark.
    assert len(list((wd / "data/logs").rglob("*.log"))) >= len(arts)
    assert len(list((wd / "data/benchmarks").rglob("*.tsv"))) >= len(arts)
    # The fidelity check of sparsify -> sae-lens conversions is recorded and passed.
    for d in (wd / "data/store/train_dict").iterdir():
        m = store.read_manifest(d)
        if m["params"]["kind"].startswith("sparsify"):
            assert m["fidelity"]["passed"] and m["fidelity"]["n_differing_tokens"] == 0 and "n_tied_tokens" in m["fidelity"]
        assert {"fvu", "dead_frac", "passed"} <= set(m["gates"])


def test_second_run_does_nothing(wd):
    assert planned(wd) == {}
    res = run(wd)
    assert "Nothing to be done" in res.stdout + res.stderr


def test_readme_everyday_commands_as_written(wd):
    def said(cmd):  # Snakemake reports on stderr, saeflow on stdout
        res = readme(wd, cmd)
        return res.stdout + res.stderr

    assert "Nothing to be done" in said("snakemake -n")
    assert "Nothing to be done" in said("snakemake figures/entropy_vs_depth_grid.png")
    status = readme(wd, "saeflow status figures/recon_summary.png").stdout
    assert status.splitlines()[-1].endswith("present, 0 would run") and "recon_summary" in status, status
    # the ledger the CLI computes from the store is the one the ledger node wrote and exported
    assert readme(wd, "saeflow ledger").stdout == (wd / "data/LEDGER.md").read_text()
    assert " 0 corrupt" in said("saeflow verify")
    assert " 0 corrupt" in said("saeflow verify --remove")
    assert planned(wd) == {}


# The tiny DAG is held to what holds by construction; the demo's outputs to the full thresholds
# (tests/test_demo.py, run by .ci/run after `make demo`).
TINY = science.Thresholds(lm_margin_bits=None, max_recon_fvu=1.0, min_ce_recovered=0.5, probes_above_chance=False,
                          circuits_beat_random=False, autointerp_beats_control=False, saebench_informative=False)


@pytest.mark.parametrize("check", [science.dictionaries_reconstruct_and_conversions_are_faithful,
                                   science.probes_are_above_chance, science.entropies_are_in_range,
                                   science.circuits_beat_random_sets_on_planted_topics,
                                   science.comparisons_agree_with_the_nodes_they_compare,
                                   science.feature_pages_show_what_the_tables_hold,
                                   science.autointerp_scores_are_accuracies_with_their_controls,
                                   science.the_ledger_reads_every_eval_and_its_verdicts_follow_the_rule,
                                   science.saebench_tasks_are_saebench_shaped_and_informative],
                         ids=lambda c: c.__name__)
def test_the_numbers_a_researcher_reads(wd, check):
    conf = cfg.validate(yaml.safe_load((wd / CONFIG).read_text()))
    check(build_plan(conf, wd), wd, TINY)


def test_published_tree_and_card(wd):
    runs = sorted((wd / "data/t/synthetic").glob("2*"))
    assert len(runs) == 1
    run_dir = runs[0]
    rc = json.loads((run_dir / "run_config.json").read_text())
    assert rc["preset"] == "t" and rc["layers"] == [1] and rc["timestamp"] == run_dir.name
    assert (run_dir / "bench.json").is_file() and (run_dir / "entropy_comparison_resid_post_layer1.parquet").is_file()
    assert (run_dir / "h_pos/layer1/ctx8.parquet").is_file() and (run_dir / "recon/topk_layer1/metrics.json").is_file()
    for fig in ("entropy_vs_depth_grid.png", "entropy_vs_depth__t__synthetic.png", "recon_summary.png"):
        assert (wd / "data/figures" / fig).read_bytes() == (wd / "figures" / fig).read_bytes()
    card = (wd / "data/README.md").read_text()
    front = yaml.safe_load(card.split("---\n")[1])
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in front["configs"]}
    assert {"entropy_features", "h_pos", "recon_per_sequence", "top_contexts", "latent_stats", "autointerp_explanations",
            "autointerp_scores", "autointerp_items", "probe", "ledger"} <= set(configs)
    # the influence dictionary's scan at the top of top_contexts/, the transcoder's in its own folder; this run only
    assert configs["top_contexts"] == [f"data/t/synthetic/{run_dir.name}/top_contexts/top_contexts_layer*.parquet",
                                       f"data/t/synthetic/{run_dir.name}/top_contexts/*/top_contexts_layer*.parquet"]
    assert configs["ledger"] == "data/ledger.parquet" and "## Results ledger" in card
    assert (run_dir / "top_contexts/transcoder/top_contexts_layer1.parquet").is_file()
    for d in ("topk_layer1", "transcoder_layer1"):
        assert (run_dir / "autointerp" / d / "latent_scores.parquet").is_file()
        assert (run_dir / "inspect" / d / "features.html").is_file()
    assert (run_dir / "inspect_index/index.html").is_file()
    assert f"| t | synthetic | {run_dir.name} | `{rc['publish_key']}` |" in card
    # Re-publishing an unchanged result (marker lost, e.g. after a pull) keeps its timestamp.
    marker = wd / "data/t/synthetic/.published" / f"{rc['publish_key']}.json"
    marker.unlink()
    assert planned(wd) == {"publish_run": 1, "all": 1}
    run(wd)
    assert sorted((wd / "data/t/synthetic").glob("2*")) == runs and marker.is_file()


def test_every_published_table_loads_as_a_viewer_config_with_its_coordinates(wd, tmp_path):
    """The card's viewer configs, read by `datasets.load_dataset` from the published tree laid out as the Hugging
    Face repo holds it (README.md beside data/): every Parquet table of the run is in a config, each config loads
    (one schema across layers, dictionaries and presets) and its rows carry their coordinates."""
    import datasets

    from saeflow.report import publish

    run_dir = max((wd / "data/t/synthetic").glob("2*"))
    tables = [p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*.parquet")]
    assert tables and [t for t in tables if publish.config_of(t) is None] == []
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(wd / "data/README.md", repo / "README.md")
    (repo / "data").symlink_to(wd / "data")
    front = yaml.safe_load((repo / "README.md").read_text().split("---\n")[1])
    names = [c["config_name"] for c in front["configs"] if c["config_name"] != "ledger"]
    assert set(names) == {publish.config_of(t) for t in tables}
    datasets.disable_progress_bars()
    ledger = datasets.load_dataset(str(repo), name="ledger", split="train", cache_dir=str(tmp_path / "cache"))
    assert ledger.num_rows > 0 and {"preset", "layer", "dictionary", "eval", "value", "lo", "hi"} <= set(ledger.column_names)
    per_layer = {"entropy_features", "entropy_windows", "h_pos", "top_contexts", "latent_stats", "recon_per_sequence",
                 "probe", "probe_correct", "geometry_pairwise", "autointerp_explanations", "autointerp_scores",
                 "autointerp_items", "autointerp_examples", "feature_pages", "ctxlen_sweep", "ctxlen_token_vector",
                 "ablation", "compare", "saebench"}
    for name in names:
        ds = datasets.load_dataset(str(repo), name=name, split="train", cache_dir=str(tmp_path / "cache"))
        cols = set(ds.column_names)
        assert ds.num_rows > 0 and {"preset", "dataset"} <= cols, (name, ds.column_names)
        assert set(ds.unique("preset")) == {"t"} and set(ds.unique("dataset")) == {"synthetic"}, name
        if name in per_layer:
            assert "layer" in cols, (name, ds.column_names)
        if name != "compare":    # a comparison names its two dictionaries (dictionary_a, dictionary_b)
            assert "dictionary" in cols, (name, ds.column_names)
    h = datasets.load_dataset(str(repo), name="h_pos", split="train", cache_dir=str(tmp_path / "cache"))
    assert {"ctx_len", "kind", "context", "acts"} <= set(h.column_names) and set(h.unique("ctx_len")) == {8, 12}


def test_snakemake_report_holds_every_figure_with_its_caption(wd):
    """`snakemake --report report.zip` (the README's command): every figure of figures/ and the ledger's page are in
    the report, grouped by stage, each with the caption that names its node; nothing is rerun to make it."""
    import zipfile

    readme(wd, "snakemake --report report.zip")
    with zipfile.ZipFile(wd / "report.zip") as z:
        names = z.namelist()
        page = z.read(next(n for n in names if n.endswith("report.html"))).decode()
    held = {n.rsplit("/", 1)[-1] for n in names}
    figures = {p.name for p in (wd / "figures").iterdir()}
    assert figures and figures <= held, figures - held
    assert "ledger.html" in figures and not any(n.endswith((".md", ".parquet", ".csv")) for n in names)
    for text in ("Reconstruction", "Locality", "Evals", "Comparisons", "Results ledger", "Made by the",
                 "content-addressed Snakemake workflow"):
        assert text in page, text
    assert planned(wd) == {}
    (wd / "report.zip").unlink()


def test_published_feature_pages_in_a_browser(wd, tmp_path):
    """The run's index and feature pages, as the workflow published them, opened in headless Chromium: the index
    links every page, a page lists the latents its summary says, a card renders tinted tokens, nothing is logged
    to the console and nothing is fetched from elsewhere."""
    try:
        ensure_chromium()
    except BrowserUnavailable as e:
        pytest.skip(str(e))
    run_dir = max((wd / "data/t/synthetic").glob("2*"))
    pages = sorted((run_dir / "inspect").glob("*/features.html"))
    assert [p.parent.name for p in pages] == ["topk_layer1", "transcoder_layer1"]
    with open_page((run_dir / "inspect_index/index.html").as_uri()) as (page, log):
        assert page.locator("#pages tbody tr").count() == 2
        page.click("#pages a >> nth=0")
        page.wait_for_selector("body[data-ready='1']")
        assert page.url == pages[0].as_uri()
        shown = json.loads((pages[0].parent / "summary.json").read_text())["shown"]
        assert page.locator("#latents tbody tr").count() == shown > 0
        page.click("th[data-key='h_pos']")          # the latents with H_pos first, a card of one of them
        page.locator("#latents tbody tr a").first.click()
        page.wait_for_selector("#card[data-latent]")
        tints = page.locator("#card .ctx span.tok").evaluate_all("s => s.map(e => getComputedStyle(e).backgroundColor)")
        assert tints and any(not t.endswith(", 0)") for t in tints)
        assert page.locator("#card .ctx").count() > 3          # top contexts and the influence contexts
        page.screenshot(path=str(tmp_path / "published_page.png"), full_page=True)
        assert log.problems() == [], log.problems()
        assert all(u.startswith(run_dir.as_uri()) for u in log.requests), log.requests


def test_touch_everything_does_nothing(wd):
    # Worst case for mtime logic: every upstream artefact newer than its consumers, and every
    # script, module and config newer still (all in the past: outputs written later must be newer,
    # or Snakemake reports clock skew).
    t = time.time() - 1000
    order = ["export", "recon_summary", "recon", "train_dict", "cache_activations", "train_lm", "windows", "tokenizer", "corpus"]
    for i, step in enumerate(order):
        for p in [*(wd / "data/store" / step).rglob("*"), wd / "data/store" / step]:
            if p.exists():
                os.utime(p, (t + i, t + i))
    for p in wd.rglob("*"):
        if p.is_file() and "data" not in p.parts and ".snakemake" not in p.parts:
            os.utime(p, (t + 100, t + 100))
    assert planned(wd) == {}


def test_edit_recon_script_reruns_only_recon_and_descendants(wd):
    script = wd / "workflow/scripts/recon.py"
    original = script.read_text()
    upstream = stat_of(files_of(wd, "cache") + files_of(wd, "dict"))
    script.write_text(original + "\nprint('recon script edited')\n")
    try:
        assert planned(wd) == RECON_DOWN
        report = saeflow_status(wd, "figures/recon_summary.png")
        assert report.count("script changed") == 3 and "upstream will run: r0" in report
        assert "4 would run" in report.splitlines()[-1]
    except AssertionError:
        script.write_text(original)
        raise
    run(wd)
    assert stat_of(files_of(wd, "cache") + files_of(wd, "dict")) == upstream
    # Reverting the edit: the old artefacts are still in the store, no computation reruns; only the
    # exports copy the old figures back to their fixed paths (recon_summary's, and eval_plots' with compare's).
    script.write_text(original)
    assert planned(wd) == {"export": 9, "publish_file": 12, "all": 1}
    run(wd)
    assert planned(wd) == {}


def test_edit_module_only_recon_imports(wd):
    module = wd / "src/saeflow/evals/recon.py"
    original = module.read_text()
    module.write_text(original + "\n_EDITED = True\n")
    try:
        assert planned(wd) == RECON_DOWN
        assert saeflow_status(wd).count("code changed: saeflow.evals.recon") == 3
    finally:
        module.write_text(original)
    assert planned(wd) == {}


def test_edit_probe_script_reruns_only_probe_and_its_figures(wd):
    # eval_plots draws the probe, circuit, compare, autocorrelation, geometry, auto-interp and SAEBench figures: its seven
    # exports (to figures/ and data/figures/) are re-copied, and the run is re-published; compare pairs the probe's
    # windows.
    assert plans_after_edit(wd, "workflow/scripts/probe.py", "\nprint('probe script edited')\n") == {
        "probe": 1, "compare": 1, "eval_plots": 1, "ledger": 1, **PUBLISH, "export": 8, "publish_file": 11, "all": 1}


def test_plotting_fix_reruns_no_computation(wd):
    assert plans_after_edit(wd, "src/saeflow/report/entropy_figures.py", "\n_PLOT_FIX = 1\n") == {
        "locality_plots": 1, "entropy_grid": 1, **PUBLISH, "export": 2, "publish_file": 3, "all": 1}
    # The probe figure lives in saeflow.report (not beside the metric): fixing it reruns the plots, not the probe.
    assert plans_after_edit(wd, "src/saeflow/report/eval_figures.py", "\n_PLOT_FIX = 1\n") == {
        "eval_plots": 1, **PUBLISH, "export": 7, "publish_file": 8, "all": 1}


def test_comment_only_edit_of_module_every_step_imports(wd):
    module = wd / "src/saeflow/workflow/store.py"
    original = module.read_text()
    edited = '"""A rewritten module docstring."""\n# a new comment\n' + original.split('"""', 2)[2]
    module.write_text(edited.replace("def sha256_file(", "\n\n# why: nothing\ndef sha256_file(") + "\n\n")
    assert planned(wd) == {}
    module.write_text(original + "\nX_NEW = 1\n")
    assert "corpus" in planned(wd)  # a real code edit of that module reruns everything
    module.write_text(original)
    assert planned(wd) == {}


def test_changing_k_reruns_training_and_descendants_only(wd):
    cfg_path = wd / CONFIG
    original = cfg_path.read_text()
    cfg = yaml.safe_load(original)
    cfg["dictionaries"]["topk"]["k"] = 6
    cfg_path.write_text(yaml.safe_dump(cfg))
    # topk is also the dictionary of the influence analyses: they rerun too, and its auto-interp and feature page
    # with the run's index; the cache does not.
    assert planned(wd) == {"train_dict": 1, "recon": 1, "recon_summary": 1, "entropy_vs_depth": 1, "ctxlen_sweep": 1,
                           "top_contexts": 1, "h_pos": 1, "locality_plots": 1, "entropy_grid": 1,
                           "probe": 1, "circuit": 1, "compare": 1, "autocorr": 1, "geometry": 1, "eval_plots": 1,
                           "autointerp": 1, "inspect": 1, "inspect_index": 1, "ledger": 1, "saebench": 1, **PUBLISH,
                           "export": 11, "publish_file": 14,
                           "all": 1}
    report = saeflow_status(wd)
    assert "params changed: k" in report and "upstream will run: dict" in report
    cfg_path.write_text(original)
    assert planned(wd) == {}


def test_store_copied_to_fresh_clone_does_nothing(wd, tmp_path):
    fresh = copy_workflow(tmp_path / "fresh", root=wd)  # the same code (the checkout may change meanwhile)
    # Plain copies: every mtime is new, and no .snakemake metadata comes along.
    shutil.copytree(wd / "data", fresh / "data", copy_function=shutil.copy)
    # No computation; only the figures are copied to their fixed paths.
    assert planned(fresh) == {"export": 11, "all": 1}
    shutil.copytree(wd / "figures", fresh / "figures", copy_function=shutil.copy)
    assert planned(fresh) == {}


def test_sigkill_mid_job_leaves_nothing_complete_and_recovery_finishes_everything(wd):
    """SIGKILL of the whole Snakemake process group while a dictionary trains; the README's recovery
    (`snakemake --unlock`, then `snakemake`) then runs the whole target to completion in one command."""
    original = (wd / CONFIG).read_text()
    cfg = yaml.safe_load(original)
    cfg["dictionaries"]["topk"]["train_tokens"] = 40960  # long enough to be killed mid-training
    set_config(wd, yaml.safe_dump(cfg))
    try:
        todo = planned(wd)
        assert todo["train_dict"] == 1 and sum(todo.values()) > 15
        before = {p.name for p in (wd / "data/store/train_dict").iterdir()}
        proc = subprocess.Popen([*SNAKEMAKE, "--cores", "1"], cwd=wd, env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        logs_before = set((wd / "data/logs/train_dict").iterdir())
        deadline = time.time() + 120
        while time.time() < deadline and not set((wd / "data/logs/train_dict").iterdir()) - logs_before:
            time.sleep(0.2)
        assert set((wd / "data/logs/train_dict").iterdir()) - logs_before, "the train_dict job never started"
        time.sleep(3.0)  # mid-training
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        new = {p.name for p in (wd / "data/store/train_dict").iterdir() if store.is_complete(p)} - before
        assert new == set(), "a killed job left a complete-looking artefact"
        assert planned(wd) == todo
        # The documented recovery, as the README writes it: a SIGKILLed Snakemake cannot remove its lock.
        readme(wd, "snakemake --unlock")
        res = readme(wd, "snakemake")
        done = re.findall(r"(\d+) of (\d+) steps \(100%\) done", res.stdout + res.stderr)
        assert done and done[-1][0] == done[-1][1] == str(sum(todo.values())), (res.stdout + res.stderr)[-2000:]
        assert planned(wd) == {}
        m = [store.read_manifest(d) for d in (wd / "data/store/train_dict").iterdir()
             if store.is_complete(d) and d.name not in before]
        assert len(m) == 1 and m[0]["params"]["train_tokens"] == 40960
        assert store.verify_store(wd / "data/store") == {}
    finally:
        set_config(wd, original)
        assert set(planned(wd)) <= {"export", "publish_file", "all"}  # the old artefacts are all there; figures are re-copied
        run(wd)
        assert planned(wd) == {}
