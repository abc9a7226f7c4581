"""A private single-node SLURM cluster on this machine, for tests (spec/environment.md, "A real
single-node SLURM on this machine").

`SlurmCluster.start()` runs munged, slurmctld and slurmd in the foreground as child processes, each with
every path (config, state, spool, logs, pid files, munge socket) in one temporary directory and with
free TCP ports, so it touches no system-wide SLURM or munge state and cannot collide with another
cluster on the machine. Clients see it through `cluster.env` (SLURM_CONF). `stop()` cancels the jobs
of this cluster and ends the three daemons by the PIDs it started, never by name.
"""
from __future__ import annotations

import atexit
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import apt

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
PACKAGES = ("slurm-wlm", "munge")

SLURM_CONF = """\
ClusterName=saeflowtest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=5
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem_mb} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class ClusterUnavailable(Exception):
    """SLURM cannot be installed or started here (not root, apt failed): tests skip with this reason."""


def missing_programs() -> list[str]:
    return [p for p in DAEMONS + CLIENTS if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def ensure_installed() -> float:
    """Install slurm-wlm and munge with apt if a program is missing; the seconds that took (0 if none)."""
    if not missing_programs():
        return 0.0
    try:
        took = apt.install(PACKAGES, f"SLURM ({', '.join(missing_programs())})")
    except apt.AptUnavailable as e:
        raise ClusterUnavailable(str(e)) from None
    if missing_programs():
        raise ClusterUnavailable(f"still missing after apt-get install: {', '.join(missing_programs())}")
    return took


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def _mem_total_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 0


class SlurmCluster:
    def __init__(self, cpus: int | None = None, mem_mb: int | None = None):
        self.cpus = cpus or os.cpu_count() or 1
        # slurmd drains a node configured with more memory than it has.
        self.mem_mb = mem_mb or min(20000, int(0.9 * _mem_total_mb()))
        self.root: Path | None = None
        self.procs: dict[str, subprocess.Popen] = {}
        self.env: dict[str, str] = {}
        self._logs: dict = {}

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> "SlurmCluster":
        if os.geteuid() != 0:
            raise ClusterUnavailable("the test cluster's daemons must run as root")
        # Short path: the munge socket path must fit in sockaddr_un (108 bytes).
        self.root = Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.root.chmod(0o755)
        atexit.register(self.stop)  # a backstop: the tests stop the cluster themselves
        try:
            self._start_munge()
            conf = self.root / "slurm.conf"
            conf.write_text(SLURM_CONF.format(root=self.root, munge_socket=self.munge_socket,
                                              ctld_port=_free_port(), slurmd_port=_free_port(),
                                              cpus=self.cpus, mem_mb=self.mem_mb))
            for d in ("state", "spool"):
                (self.root / d).mkdir()
            bin_dir = self._client_shims(conf)
            self.env = {**os.environ, "SLURM_CONF": str(conf),
                        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', os.defpath)}"}
            for k in [k for k in self.env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SQUEUE_"))]:
                if k != "SLURM_CONF":
                    del self.env[k]
            self._spawn("slurmctld", [_sbin("slurmctld"), "-D", "-i", "-f", str(conf)])
            self._spawn("slurmd", [_sbin("slurmd"), "-D", "-N", "localhost", "-f", str(conf)])
            self._wait_idle(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Cancel this cluster's jobs, then end slurmd, slurmctld and munged by their PIDs."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            subprocess.run(["scancel", "--user", pwd.getpwuid(os.getuid()).pw_name], env=self.env,
                           capture_output=True, timeout=30)
            deadline = time.time() + 15
            while time.time() < deadline and self.squeue("%i", states="RUNNING,COMPLETING,PENDING"):
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            proc = self.procs.pop(name, None)
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        for f in self._logs.values():
            f.close()
        self._logs = {}
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    # -- queries -----------------------------------------------------------------------------------
    def squeue(self, fmt: str, states: str = "all") -> list[str]:
        res = subprocess.run(["squeue", "-h", f"--states={states}", "-o", fmt], env=self.env,
                             capture_output=True, text=True, timeout=30)
        return [line for line in res.stdout.splitlines() if line.strip()] if res.returncode == 0 else []

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as {field: value} (JobState, MinMemoryNode, TimeLimit, NumCPUs, ...)."""
        res = subprocess.run(["scontrol", "-o", "show", "job", str(job_id)], env=self.env,
                             capture_output=True, text=True, timeout=30)
        assert res.returncode == 0, res.stderr
        return dict(tok.split("=", 1) for tok in res.stdout.split() if "=" in tok)

    def daemon_log(self, name: str) -> str:
        p = self.root / f"{name}.log" if self.root else None
        return p.read_text(errors="replace") if p and p.exists() else ""

    # -- internals ---------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str], **kw) -> None:
        self._logs[name] = open(self.root / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=self._logs[name], stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env or os.environ, **kw)

    def _client_shims(self, conf: Path) -> Path:
        """`<root>/bin/<client>`: the real client with SLURM_CONF set to this cluster's config.

        The env alone is not enough: snakemake-executor-plugin-slurm-jobstep (0.6.1) drops every
        SLURM_* variable but a few job ids, SLURM_CONF included, before its `srun` inside the job, and
        that srun would then look for /etc/slurm/slurm.conf. A cluster configured in /etc/slurm (every
        real one) does not need this.
        """
        bin_dir = self.root / "bin"
        bin_dir.mkdir()
        for name in CLIENTS + ("sacct",):
            real = shutil.which(name)
            if real:
                shim = bin_dir / name
                shim.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec {real} "$@"\n')
                shim.chmod(0o755)
        return bin_dir

    def _start_munge(self) -> None:
        mdir = self.root / "munge"
        mdir.mkdir()
        mdir.chmod(0o755)  # munged: the socket directory must be searchable by all, writable only by munge
        munge = pwd.getpwnam("munge")
        os.chown(mdir, munge.pw_uid, munge.pw_gid)
        self.munge_socket = mdir / "munge.socket"
        key = mdir / "munge.key"  # a key of this cluster's own, not the system's /etc/munge/munge.key
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        self._spawn("munged", [_sbin("munged"), "-F", f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={mdir}/munged.pid", f"--log-file={mdir}/munged.log",
                               f"--seed-file={mdir}/munged.seed"],
                    user=munge.pw_uid, group=munge.pw_gid)
        deadline = time.time() + 15
        while not self.munge_socket.exists():
            if self.procs["munged"].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"munged did not start: {(self.root / 'munged.stdout').read_text()}")
            time.sleep(0.1)

    def _wait_idle(self, timeout: float) -> None:
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.daemon_log(name)[-3000:]}")
            res = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True)
            state = res.stdout.strip()
            if res.returncode == 0 and state == "idle":
                return
            time.sleep(0.5)
        raise RuntimeError(f"node not idle after {timeout} s (state {state!r}):\n"
                           f"{self.daemon_log('slurmctld')[-3000:]}\n{self.daemon_log('slurmd')[-3000:]}")
