"""Debian packages a test needs, installed with apt when missing (as root): SLURM (tests/slurm_cluster.py) and
Chromium (tests/browser.py). CI starts clean, so the tests that need a program install it themselves."""
from __future__ import annotations

import os
import subprocess
import time


class AptUnavailable(Exception):
    """The packages cannot be installed here (not root, apt failed)."""


def install(packages: tuple[str, ...], what: str) -> float:
    """`apt-get update` then `apt-get install -y` of `packages`; the seconds it took. `what` names the missing
    programs in the error when installing needs root."""
    if os.geteuid() != 0:
        raise AptUnavailable(f"{what} is not installed and installing it needs root")
    t0 = time.time()
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise AptUnavailable(f"`{' '.join(cmd)}` failed: {res.stderr.strip()[-1000:]}")
    return time.time() - t0
