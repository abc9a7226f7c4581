"""The commands the README shows, as a user would type them (tests/test_readme.py checks that every one is
run, exactly as written, by some test)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRAMS = ("make", "snakemake", "saeflow")


def readme_commands(path: Path = ROOT / "README.md") -> list[str]:
    """Every line of an indented (4+ spaces after a blank line) or fenced code block that starts with one of
    PROGRAMS, with a trailing `# comment` removed, in README order (duplicates once)."""
    out, in_block, fenced, prev_blank = [], False, False, True
    for line in path.read_text().splitlines():
        if line.strip().startswith("```"):
            fenced = not fenced
            continue
        indented = line.startswith("    ") and (in_block or prev_blank)
        in_block = bool(line.strip()) and (indented or fenced) or (in_block and not line.strip())
        if (indented or fenced) and line.strip():
            cmd = re.sub(r"\s+#.*$", "", line.strip())
            if cmd.split()[0] in PROGRAMS and cmd not in out:
                out.append(cmd)
        prev_blank = not line.strip()
    return out


def run_readme_command(cmd: str, cwd: Path, env: dict, timeout: float = 900, **kw):
    """Run a README command exactly as written (its words, split as a shell would; the programs are this
    venv's), in `cwd` with `env`; refuses a command the README does not show."""
    import os
    import shlex
    import subprocess
    import sys

    assert cmd in readme_commands(), f"{cmd!r} is not a command of the README"
    bin_dir = os.path.dirname(sys.executable)
    env = {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', os.environ.get('PATH', ''))}"}
    return subprocess.run(shlex.split(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, **kw)


def readme_block_after(marker: str) -> str:
    """The indented code block that follows the first README line containing `marker` (dedented)."""
    lines = (ROOT / "README.md").read_text().splitlines()
    i = next(i for i, line in enumerate(lines) if marker in line)
    block, started = [], False
    for line in lines[i + 1:]:
        if line.startswith("    ") or (started and not line.strip()):
            started = True
            block.append(line)
        elif started:
            break
    indent = min(len(x) - len(x.lstrip()) for x in block if x.strip())
    return "\n".join(x[indent:] for x in block).strip() + "\n"
