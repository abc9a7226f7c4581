"""The sbatch calls that `--profile profiles/slurm` makes, without a cluster.

The real Snakemake CLI runs the real profile and the real snakemake-executor-plugin-slurm; only the
SLURM client commands are stand-ins (first on PATH): `sbatch` records its argv and refuses the job, so
nothing runs and every retry is a new recorded call; `sinfo`, `scontrol`, `sacct`, `sacctmgr` answer
what the plugin asks at start-up (default partition `debug`, MinJobAge, accounts).

The direct tests at the end call the plugin's own builders (`get_submit_command`, `set_gres_string`)
on a minimal job object, for the cases the CLI runs do not reach.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from test_workflow import ENV, copy_workflow

from saeflow.cli import load_plan

pytestmark = pytest.mark.workflow
CONFIG = "tests/configs/slurm.yaml"

FAKE_SBATCH = """#!{python}
import json, os, sys
with open(os.environ["FAKE_SLURM_CALLS"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.stderr.write("sbatch: error: test stand-in, nothing submitted\\n")
sys.exit(1)
"""
FAKE_OTHER = """#!/bin/sh
case "$*" in
  "-o %P") echo PARTITION; echo "debug*";;
  "show config") echo "MinJobAge               = 300 sec";;
  *"list user"*) echo "proj_x"; echo "my_project";;
esac
exit 0
"""
PARTITIONS = {"partitions": {"cpu": {"max_runtime": 1440, "max_mem_mb": 64000, "max_threads": 32},
                             "gpu": {"max_runtime": 1440, "max_mem_mb": 256000, "max_threads": 32, "max_gpu": 4}}}


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fake_slurm_bin")
    (d / "sbatch").write_text(FAKE_SBATCH.format(python=sys.executable))
    for cmd in ("sinfo", "scontrol", "squeue", "sacct", "sacctmgr", "sshare", "scancel", "srun"):
        (d / cmd).write_text(FAKE_OTHER)
    for p in d.iterdir():
        p.chmod(0o755)
    return d


def sbatch_calls(tmp: Path, fake_bin: Path, config: dict, target_step: str, env: dict | None = None,
                 extra_args: tuple[str, ...] = (), fake_upstream: bool = True) -> tuple[list[dict], str]:
    """Every sbatch call (as {flag: value}, plus `wrap`) that the slurm profile makes for the node of
    `target_step`; with `fake_upstream`, its upstream artefacts are faked as present (empty directories:
    no job ever runs), so that this node is the first one submitted.
    """
    wd = copy_workflow(tmp)
    cfg_path = wd / "tests/configs/profile_test.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    plan = load_plan([str(cfg_path)], wd)
    target = next(n for n in plan.nodes.values() if n.step == target_step)
    for node in plan.ancestors(target.key)[:-1] if fake_upstream else []:
        (wd / node.path).mkdir(parents=True)
        (wd / node.target).write_text("{}")  # present to Snakemake (rule outputs are manifests)
    log = wd / "sbatch_calls.jsonl"
    run_env = {k: v for k, v in ENV.items() if not k.startswith(("SLURM", "SAEFLOW_SLURM", "SNAKEMAKE_SLURM"))}
    run_env.update(PATH=f"{fake_bin}{os.pathsep}{ENV['PATH']}", FAKE_SLURM_CALLS=str(log), **(env or {}))
    res = subprocess.run([sys.executable, "-m", "snakemake", "--profile", "profiles/slurm", target.target,
                          "--slurm-init-seconds-before-status-checks", "1", *extra_args,
                          "--configfile", str(cfg_path)], cwd=wd, env=run_env, capture_output=True, text=True)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out  # every submission is refused
    assert log.exists(), out[-4000:]
    calls = [parse_sbatch(json.loads(line)) for line in log.read_text().splitlines()]
    return calls, out


def parse_sbatch(argv: list[str]) -> dict:
    """{'--mem': '2000', '-t': '30', '--ntasks': '1', '--gpus': '1', 'wrap': '...', ...}"""
    out: dict = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--wrap="):
            out["wrap"] = a[len("--wrap="):]
        elif "=" in a and a.startswith("--"):
            k, v = a.split("=", 1)
            out[k] = v
        elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
            out[a] = argv[i + 1]
            i += 1
        else:
            out[a] = True
        i += 1
    return out


def base_config() -> dict:
    return yaml.safe_load((Path(__file__).parent / "configs/slurm.yaml").read_text())


def test_gpu_rule_requests_a_gpu_and_retries_scale_memory_and_time(tmp_path, fake_bin):
    # A preset on CUDA: train_lm is a GPU rule (gpu=1). Resources come from the config's
    # `resources:` section; the account comes from the environment, and the GPU partition is chosen
    # by the plugin from a partition-limits file (SNAKEMAKE_SLURM_PARTITIONS).
    config = base_config()
    config["presets"]["t"]["device"] = "cuda"
    config["resources"] = {"train_lm": {"mem_mb": 3000, "runtime": 45, "threads": 2}}
    partitions = tmp_path / "partitions.yaml"
    partitions.write_text(yaml.safe_dump(PARTITIONS))
    calls, out = sbatch_calls(tmp_path / "wd", fake_bin, config, "train_lm",
                              env={"SAEFLOW_SLURM_ACCOUNT": "proj_x", "SNAKEMAKE_SLURM_PARTITIONS": str(partitions)})
    assert len(calls) == 3, out[-3000:]  # restart-times: 2 -> three attempts
    for attempt, call in enumerate(calls, start=1):
        assert call["--gpus"] == "1"
        assert "--gres" not in call
        assert call["-p"] == "gpu" and call["-A"] == "proj_x"
        assert call["--cpus-per-task"] == "2"
        assert "--ntasks" not in call  # GPU jobs leave task geometry to the cluster
        assert call["--mem"] == str(3000 * attempt) and call["-t"] == str(45 * attempt)
        assert call["--comment"].startswith("rule_train_lm_wildcards_")
        wrap = shlex.split(call["wrap"])
        assert wrap[:3] == [sys.executable, "-m", "snakemake"]
        assert wrap[wrap.index("--attempt") + 1] == str(attempt)
        assert "slurm-jobstep" in wrap
        assert call["-D"] == str(tmp_path / "wd")


def test_cpu_rule_requests_no_gpu(tmp_path, fake_bin):
    # The same CUDA preset: geometry (decoder cosines, no model) stays on CPU (gpu=0) -> no --gpus/--gres
    # flag at all. Partition from SAEFLOW_SLURM_PARTITION; no account given and none to guess -> no -A.
    config = base_config()
    config["presets"]["t"]["device"] = "cuda"
    config["geometry"] = {"n_permutations": 100}
    calls, out = sbatch_calls(tmp_path / "wd", fake_bin, config, "geometry",
                              env={"SAEFLOW_SLURM_PARTITION": "short"}, extra_args=("--restart-times", "0"))
    assert len(calls) == 1, out[-3000:]
    (call,) = calls
    assert not any(k.startswith(("--gpus", "--gres", "--ntasks-per-gpu", "--cpus-per-gpu")) for k in call)
    assert call["--ntasks"] == "1" and call["--cpus-per-task"] == "1"
    assert call["-p"] == "short" and "-A" not in call
    assert call["--mem"] == "4000" and call["-t"] == "30"  # saeflow.workflow.plan defaults for geometry
    assert call["--comment"].startswith("rule_geometry_wildcards_")


def test_prep_steps_are_one_group_job(tmp_path, fake_bin):
    # corpus -> tokenizer -> windows go to SLURM as one job: memory is the largest of the three,
    # runtime their sum (they run one after another). No partition given -> the cluster's default.
    calls, out = sbatch_calls(tmp_path / "wd", fake_bin, base_config(), "windows", extra_args=("--restart-times", "0"),
                              fake_upstream=False)
    assert len(calls) == 1, out[-3000:]
    (call,) = calls
    assert call["--comment"] == "rule_prep_corpus_tokenizer_windows"
    wrap = shlex.split(call["wrap"])
    assert {"corpus", "tokenizer", "windows"} <= set(wrap[wrap.index("--allowed-rules") + 1:])
    assert call["--mem"] == "2000" and call["-t"] == "30" and call["--cpus-per-task"] == "1"
    assert call["-p"] == "debug" and "-A" not in call
    assert "--gpus" not in call and "--gres" not in call


def test_personal_profile_layered_on_top(tmp_path, fake_bin):
    # `--profile profiles/slurm --profile <mine>`: the later profile overrides top-level keys, here the
    # default resources (partition, account) and a plugin option (QoS); the rest of the shipped profile
    # (retries, groups, resources per step) still applies.
    mine = tmp_path / "mycluster"
    mine.mkdir()
    (mine / "config.yaml").write_text(yaml.safe_dump({
        "default-resources": {"slurm_partition": "'long'", "slurm_account": "'proj_x'"},
        "slurm-qos": "normal", "restart-times": 1}))
    calls, out = sbatch_calls(tmp_path / "wd", fake_bin, base_config(), "entropy_vs_depth",
                              extra_args=("--profile", str(mine)))
    assert len(calls) == 2, out[-3000:]
    for attempt, call in enumerate(calls, start=1):
        assert call["-p"] == "long" and call["-A"] == "proj_x" and call["--qos"] == "normal"
        assert call["--mem"] == str(8000 * attempt)


# The README's cluster commands, exactly as written, in a copy whose default config is the slurm test config
# (the paper ones with config/paper.yaml as shipped). Only the SLURM commands are stand-ins; a command that
# submits must reach sbatch with a well-formed call, a dry run must plan without error.
README_COMMANDS = [
    "snakemake --profile profiles/slurm figures/entropy_vs_depth_grid.png --configfile config/paper.yaml",
    "snakemake --profile profiles/slurm figures/entropy_vs_depth_grid.png --configfile config/paper.yaml -n",
    "snakemake --profile profiles/slurm figures/entropy_vs_depth_grid.png",
    "snakemake --profile profiles/slurm -n",
    "snakemake --profile profiles/slurm",
    "snakemake --profile profiles/slurm --profile mycluster figures/entropy_vs_depth_grid.png",
    # paper-scale steering (README "Steering")
    "snakemake --profile profiles/slurm all --configfile config/steer_qwen3.yaml",
    "snakemake --profile profiles/slurm all --configfile config/steer_qwen3.yaml -n",
    "snakemake --profile profiles/slurm all --configfile config/steer_gemma.yaml --config "
    "'datasets={\"bias-in-bios\": {\"revision\": \"<commit>\"}}'",
    "snakemake --profile profiles/slurm all --configfile config/steer_gemma.yaml --config "
    "'datasets={\"bias-in-bios\": {\"revision\": \"0000000000000000000000000000000000000000\"}}' -n",
    # paper-scale auto-interp (README "Feature pages and auto-interp")
    "snakemake --profile profiles/slurm all --configfile config/autointerp_gemma.yaml",
    "snakemake --profile profiles/slurm all --configfile config/autointerp_gemma.yaml -n",
]


def mycluster_profile() -> str:
    """The personal profile the README shows (the lines after its `# ~/.config/...` comment)."""
    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if line.strip() == "# ~/.config/snakemake/mycluster/config.yaml")
    out = []
    for line in lines[i + 1:]:
        if not line.strip():
            break
        out.append(line.strip("\n"))
    indent = min(len(x) - len(x.lstrip()) for x in out)
    return "\n".join(x[indent:] for x in out) + "\n"


def test_readme_cluster_commands_as_written(tmp_path, fake_bin):
    from readme import run_readme_command

    wd = copy_workflow(tmp_path / "wd")
    (wd / "config/config.yaml").write_text((wd / CONFIG).read_text())
    # The plugin waits 40 s before its first status check, even when every submission was refused; the
    # workflow profile (this copy's environment, not the command) shortens that wait.
    with open(wd / "profiles/default/config.yaml", "a") as f:
        f.write("slurm-init-seconds-before-status-checks: 1\n")
    home = tmp_path / "home"
    (home / ".config/snakemake/mycluster").mkdir(parents=True)
    (home / ".config/snakemake/mycluster/config.yaml").write_text(mycluster_profile())
    log = tmp_path / "calls.jsonl"
    base = {k: v for k, v in ENV.items() if not k.startswith(("SLURM", "SAEFLOW_SLURM", "SNAKEMAKE_SLURM"))}
    base.update(PATH=f"{fake_bin}{os.pathsep}{ENV['PATH']}", FAKE_SLURM_CALLS=str(log), HOME=str(home),
                XDG_CONFIG_HOME=str(home / ".config"))
    # `export SAEFLOW_SLURM_PARTITION=gpu SAEFLOW_SLURM_ACCOUNT=my_project`, as the README's first block sets
    exported = {**base, "SAEFLOW_SLURM_PARTITION": "gpu", "SAEFLOW_SLURM_ACCOUNT": "my_project"}
    for cmd, env in ((README_COMMANDS[2], exported), (README_COMMANDS[4], base), (README_COMMANDS[0], base),
                     (README_COMMANDS[5], base), (README_COMMANDS[6], base), (README_COMMANDS[8], base),
                     (README_COMMANDS[10], base)):
        log.unlink(missing_ok=True)
        res = run_readme_command(cmd, wd, env, timeout=300)
        out = res.stdout + res.stderr
        assert res.returncode != 0 and "error: unrecognized arguments" not in out, out[-3000:]  # refused by sbatch
        calls = [parse_sbatch(json.loads(line)) for line in log.read_text().splitlines()]
        assert calls and all("--wrap" in c or "wrap" in c for c in calls), out[-3000:]
        if env is exported:
            assert all(c["-p"] == "gpu" and c["-A"] == "my_project" for c in calls)
        if "mycluster" in cmd:
            assert all(c["-p"] == "gpu" and c["-A"] == "my_project" and c["--qos"] == "normal" for c in calls)
    for cmd in (README_COMMANDS[1], README_COMMANDS[3], README_COMMANDS[7], README_COMMANDS[9], README_COMMANDS[11]):
        res = run_readme_command(cmd, wd, base, timeout=300)
        assert res.returncode == 0 and "Job stats" in res.stdout, res.stdout[-2000:] + res.stderr[-2000:]


# Direct calls of the plugin's builders (what Executor.run_job concatenates into the sbatch call).

def _job(threads: int = 1, **resources):
    class Resources(SimpleNamespace):
        def get(self, name, default=None):
            return getattr(self, name, default)

    return SimpleNamespace(resources=Resources(**resources), threads=threads, is_group=lambda: False)


def _submit(job) -> list[str]:
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    params = {"run_uuid": "u", "slurm_logfile": "x/%j.log", "comment_str": "rule_r", "account": " -A acc",
              "partition": " -p part", "workdir": "/w"}
    return shlex.split(get_submit_command(job, params) + set_gres_string(job))


def test_plugin_builders_gpu_zero_one_and_model():
    cpu = _submit(_job(threads=4, mem_mb=4000, runtime=60, gpu=0))
    assert not any(a.startswith(("--gpus", "--gres")) for a in cpu)
    assert {"--ntasks=1", "--cpus-per-task=4"} <= set(cpu)
    assert cpu[cpu.index("--mem") + 1] == "4000" and cpu[cpu.index("-t") + 1] == "60"
    assert cpu[cpu.index("-A") + 1] == "acc" and cpu[cpu.index("-p") + 1] == "part"
    gpu = _submit(_job(threads=2, mem_mb=8000, runtime=120, gpu=1))
    assert "--gpus=1" in gpu and "--cpus-per-task=2" in gpu and not any(a.startswith("--ntasks") for a in gpu)
    assert "--gpus=a100:1" in _submit(_job(mem_mb=1, runtime=1, gpu=1, gpu_model="a100"))
    # Why the profile never sets gpu_model (or gres) in default-resources: on a gpu=0 job the plugin
    # would still ask for GPUs of that model.
    assert "--gpus=a100:0" in _submit(_job(mem_mb=1, runtime=1, gpu=0, gpu_model="a100"))
