"""The workflow through `--profile profiles/slurm` on a real single-node SLURM cluster (tests/slurm_cluster.py).

Three temporary copies of the workflow, run at the same time (the main run is a chain of one-core jobs):

- `slurm`: `figures/entropy_vs_depth_grid.png` on tests/configs/slurm.yaml through the shipped slurm
  profile plus a small test profile layered on top of it (a second `--profile`: squeue for job status,
  short status intervals, SLURM logs kept);
- `local`: the same target with the local executor;
- `failures`: the corpus step's script, edited in this copy only, sleeps in its first run and fails in
  its second (markers in the working directory); SLURM cancels the first (`scancel`), and the rerun's
  failed attempt is retried by Snakemake.

Checked: every artefact of the main run was written by a SLURM job that COMPLETED; both stores hold the
same keys and every artefact the same files with the same sha256 (training on CPU with one thread is
deterministic); the cancelled job left nothing that looks complete; the failed job was resubmitted with
twice the memory and time (`attempt` 2) and the rerun finished the work.

Skips only where SLURM cannot be installed (not root, apt failure). Every daemon is stopped by PID.
"""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from slurm_cluster import ClusterUnavailable, SlurmCluster, ensure_installed
from test_workflow import ENV, copy_workflow

from saeflow.cli import load_plan
from saeflow.workflow import store

pytestmark = pytest.mark.workflow
CONFIG = "tests/configs/slurm.yaml"
TARGET = "figures/entropy_vs_depth_grid.png"
# The user-side overrides a cluster without accounting (no slurmdbd) needs, as a second profile.
TEST_PROFILE = {
    "slurm-status-command": "squeue",
    "slurm-no-account": True,
    "slurm-init-seconds-before-status-checks": 1,
    "slurm-keep-successful-logs": True,
    "latency-wait": 5,
}
# Code injected at the top of the corpus script's `with store.write_artefact(...)` block, in the `failures`
# copy only (it changes that copy's keys from the corpus step on). Markers are relative: jobs run in the
# workflow's working directory. First run: sleeps (and is cancelled); rerun: fails once.
INJECTED = """\
    import pathlib as _pl, time as _time
    if not _pl.Path("sleep-once.marker").exists():
        _pl.Path("sleep-once.marker").touch()
        _time.sleep(600)
    if not _pl.Path("fail-once.marker").exists():
        _pl.Path("fail-once.marker").touch()
        raise RuntimeError("injected failure of the first attempt")
"""
STEP, SCRIPT = "corpus", "workflow/scripts/corpus.py"  # the first step of the `prep` group job
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster():
    try:
        TIMES["apt_install_s"] = ensure_installed()
        t0 = time.time()
        c = SlurmCluster().start()
        TIMES["cluster_start_s"] = time.time() - t0
    except ClusterUnavailable as e:
        pytest.skip(f"no SLURM cluster: {e}")
    try:
        yield c
    finally:
        c.stop()
        print("SLURM test times:", {k: round(v, 1) for k, v in TIMES.items()})


def inject(wd: Path, script: str, code: str) -> str:
    """Insert `code` at the top of the script's `with store.write_artefact(...)` block; the original text."""
    path = wd / script
    original = path.read_text()
    lines = original.splitlines(keepends=True)
    (i,) = [i for i, line in enumerate(lines) if line.startswith("with store.write_artefact(")]
    path.write_text("".join(lines[:i + 1]) + code + "".join(lines[i + 1:]))
    return original


class Runs:
    """The copies of the workflow, the test profile, the client env, and what each run left."""

    def __init__(self, base: Path, cluster: SlurmCluster):
        self.cluster = cluster
        self.slurm_wd = copy_workflow(base / "slurm")
        self.local_wd = copy_workflow(base / "local")
        self.failures_wd = copy_workflow(base / "failures")
        self.profile = base / "profile-test"
        self.profile.mkdir()
        (self.profile / "config.yaml").write_text(yaml.safe_dump(TEST_PROFILE))
        self.env = {**cluster.env, **{k: ENV[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                          "SPARSIFY_DISABLE_TRITON", "WANDB_MODE", "HF_HUB_OFFLINE")}}
        for k in [k for k in self.env if k.startswith(("SAEFLOW_SLURM", "SNAKEMAKE_SLURM", "SNAKEMAKE_PROFILE"))]:
            del self.env[k]
        self.out = ""
        self.failures: dict = {}

    def slurm_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", "--profile", str(self.profile),
                *args, "--configfile", CONFIG]

    def slurm(self, wd: Path, *args: str, timeout: float = 600) -> str:
        res = subprocess.run(self.slurm_cmd(*args), cwd=wd, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise AssertionError(f"snakemake on SLURM failed:\n{res.stdout[-3000:]}\n{res.stderr[-8000:]}\n"
                                 f"slurmctld log:\n{self.cluster.daemon_log('slurmctld')[-2000:]}")
        return res.stdout + res.stderr

    @staticmethod
    def node(wd: Path, step: str):
        plan = load_plan([str(wd / CONFIG)], wd)
        (node,) = [n for n in plan.nodes.values() if n.step == step]
        return node

    @staticmethod
    def slurm_logs(wd: Path) -> dict[str, Path]:
        """{SLURM job id: log} of the jobs submitted from `wd` (all kept: slurm-keep-successful-logs)."""
        return {p.stem: p for p in (wd / ".snakemake/slurm_logs").rglob("*.log")}

    def run_local(self) -> None:
        t0 = time.time()
        self.local = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", TARGET, "--configfile", CONFIG],
                                    cwd=self.local_wd, env=ENV, capture_output=True, text=True, timeout=600)
        TIMES["local_dag_s"] = time.time() - t0

    def run_failures(self) -> None:
        """The `failures` copy: a job SLURM cancels while it writes its artefact, then a rerun whose first
        attempt fails. Records what the tests check in `self.failures`."""
        f, wd = self.failures, self.failures_wd
        t0 = time.time()
        try:
            inject(wd, SCRIPT, INJECTED)
            node = f["node"] = self.node(wd, STEP)
            final = wd / node.path
            proc = subprocess.Popen(self.slurm_cmd("--restart-times", "0", node.target), cwd=wd, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            try:
                deadline = time.time() + 300
                while not (wd / "sleep-once.marker").exists():  # the job is inside write_artefact now
                    assert proc.poll() is None, proc.stdout.read()[-4000:]
                    assert time.time() < deadline, "the job did not reach write_artefact"
                    time.sleep(0.2)
                (job_id,) = [line.split("|")[0] for line in self.cluster.squeue("%i|%Z", states="RUNNING")
                             if line.split("|")[1] == str(wd)]
                subprocess.run(["scancel", job_id], env=self.env, check=True)
                f["cancel_out"], _ = proc.communicate(timeout=300)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            f["cancelled"], f["cancel_returncode"] = job_id, proc.returncode
            f["manifest_after_cancel"] = (final / store.MANIFEST).exists()
            f["listed_after_cancel"] = final in set(store.iter_artefacts(wd / "data/store"))
            f["leftovers"] = [p.name for p in final.parent.iterdir() if p.name.startswith(f".tmp-{node.key}-")]
            f["rerun_out"] = self.slurm(wd, node.target)
            f["verify"] = store.verify_artefact(final)
            f["verify_store"] = store.verify_store(wd / "data/store")
        except BaseException as e:  # re-raised by the tests
            f["error"] = e
        TIMES["failures_s"] = time.time() - t0


@pytest.fixture(scope="module")
def runs(cluster, tmp_path_factory):
    r = Runs(tmp_path_factory.mktemp("slurm_wf"), cluster)
    threads = [threading.Thread(target=r.run_local), threading.Thread(target=r.run_failures)]
    for t in threads:
        t.start()
    t0 = time.time()
    try:
        r.out = r.slurm(r.slurm_wd, TARGET)
        TIMES["slurm_dag_s"] = time.time() - t0
    finally:
        for t in threads:
            t.join()
    assert r.local.returncode == 0, r.local.stderr[-6000:]
    return r


@pytest.fixture
def failures(runs) -> dict:
    if "error" in runs.failures:
        raise runs.failures["error"]
    return runs.failures


def test_every_job_ran_as_a_slurm_job(runs):
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", runs.out))
    logs = runs.slurm_logs(runs.slurm_wd)
    assert submitted and set(logs) == submitted, runs.out[-3000:]
    for job_id in logs:
        assert runs.cluster.job_info(job_id)["JobState"] == "COMPLETED", job_id
    # The prep steps went to SLURM as one group job.
    assert sum("group_prep" in str(p) for p in logs.values()) == 1
    # Each artefact was written inside one of those jobs (its path is an output in that job's log),
    # or, for a step that is a localrule, by the main process (an output of a `localrule` block).
    in_jobs = [p.read_text() for p in logs.values()]
    local_outputs = set(re.findall(r"^localrule \w+:\n(?:    .*\n)*?    output: (\S+)", runs.out, re.M))
    arts = list(store.iter_artefacts(runs.slurm_wd / "data/store"))
    assert {a.parent.name for a in arts} == {"corpus", "tokenizer", "windows", "train_lm", "cache_activations", "train_dict", "entropy_vs_depth",
                                             "entropy_grid"}
    for a in arts:
        rel = str(a.relative_to(runs.slurm_wd) / "manifest.json")  # a rule's output is the artefact's manifest
        in_a_job = any(re.search(rf"^    output: (.*, )?{re.escape(rel)}\b", t, re.M) for t in in_jobs)
        assert in_a_job != (rel in local_outputs), rel
        if a.parent.name in ("train_lm", "cache_activations", "train_dict", "entropy_vs_depth"):
            assert in_a_job, rel
    assert TARGET in local_outputs  # the export is a localrule
    assert (runs.slurm_wd / TARGET).stat().st_size > 10_000


def test_artefacts_identical_to_local_run(runs):
    def manifests(wd: Path) -> dict[str, dict]:
        out = {}
        for a in store.iter_artefacts(wd / "data/store"):
            assert store.verify_artefact(a) == [], a  # the files on disk match their manifest's sha256
            out[a.name] = store.read_manifest(a)
        return out

    on_slurm, local = manifests(runs.slurm_wd), manifests(runs.local_wd)
    assert set(on_slurm) == set(local)
    for key, m in on_slurm.items():
        assert m["step"] == local[key]["step"]
        # The `files` maps (path -> sha256, size) agree, the trained LM and dictionary weights
        # included: CPU training with one thread is deterministic. (host, start/end, wall_s, peak RSS
        # differ and are not compared.)
        assert m["files"] == local[key]["files"], (m["step"], key)
    assert (runs.slurm_wd / TARGET).read_bytes() == (runs.local_wd / TARGET).read_bytes()


def test_job_cancelled_by_slurm_leaves_no_complete_artefact(runs, failures):
    f = failures
    assert f["cancel_returncode"] != 0, f["cancel_out"][-3000:]
    assert runs.cluster.job_info(f["cancelled"])["JobState"] == "CANCELLED"
    assert f"JOB {f['cancelled']} ON localhost CANCELLED" in f["cancel_out"], f["cancel_out"][-3000:]
    # Nothing complete-looking where the artefact belongs: at most the killed job's temporary directory.
    assert not f["manifest_after_cancel"] and not f["listed_after_cancel"]
    print(f"cancelled SLURM job {f['cancelled']} left {f['leftovers'] or 'nothing'} next to {f['node'].path}")


def test_rerun_retries_a_failed_job_with_more_memory_and_time_and_finishes(runs, failures):
    f = failures
    jobs = sorted(runs.slurm_logs(runs.failures_wd), key=int)
    assert jobs[0] == f["cancelled"] and len(jobs) == 3, jobs
    first, second = (runs.cluster.job_info(i) for i in jobs[1:])
    assert (first["JobState"], second["JobState"]) == ("FAILED", "COMPLETED")
    assert "RuntimeError: injected failure of the first attempt" in f["rerun_out"]  # from the rule's log
    assert _mem_mb(second["MinMemoryNode"]) == 2 * _mem_mb(first["MinMemoryNode"])
    assert _minutes(second["TimeLimit"]) == 2 * _minutes(first["TimeLimit"])
    # The target is the corpus node alone: its group job asks for the step's own resources.
    assert _mem_mb(first["MinMemoryNode"]) == f["node"].resources["mem_mb"]
    assert _minutes(first["TimeLimit"]) == f["node"].resources["runtime"]
    assert f["verify"] == [] and f["verify_store"] == {}


def _mem_mb(value: str) -> int:
    m = re.fullmatch(r"(\d+)([MGT]?)", value)
    return int(m.group(1)) * {"": 1, "M": 1, "G": 1024, "T": 1024 ** 2}[m.group(2)]


def _minutes(limit: str) -> int:
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)
