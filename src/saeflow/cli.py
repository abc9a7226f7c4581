"""`saeflow` command line: status of the plan against the store, and store verification.

    saeflow status [TARGET] [--configfile F]   which nodes are present, which would run, and why
    saeflow verify [--remove] [--store DIR]    re-hash every artefact against its manifest

Start-up stays light (no torch / sae_lens imports): it only parses the config and computes keys.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import yaml

from saeflow import config as cfg
from saeflow import store
from saeflow.plan import Plan, build_plan


def load_plan(configfiles: list[str], workdir: Path) -> Plan:
    paths = configfiles or [str(workdir / "config" / "config.yaml")]
    conf: dict = {}
    for p in paths:
        _merge(conf, yaml.safe_load(Path(p).read_text()))
    return build_plan(cfg.validate(conf), workdir)


def _merge(base: dict, new: dict) -> None:
    """Recursive update, as Snakemake merges several config files."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def explain_missing(plan: Plan, node, workdir: Path) -> str:
    """Why a node has no artefact: compare with stored artefacts of the same step and labels."""
    step_dir = workdir / plan.store / node.step
    candidates = []
    for d in sorted(step_dir.iterdir()) if step_dir.is_dir() else []:
        if d.name.startswith("."):
            continue
        try:
            m = store.read_manifest(d)
        except (FileNotFoundError, json.JSONDecodeError):
            continue
        if m.get("labels") == node.labels:
            candidates.append(m)
    if not candidates:
        return "never computed"
    m = max(candidates, key=lambda m: m.get("end", ""))
    reasons = []
    if changed := _diff(m["params"], node.params):
        reasons.append(f"params changed: {', '.join(changed)}")
    if changed := _diff(m.get("upstream", {}), node.upstream):
        reasons.append(f"upstream changed: {', '.join(changed)}")
    if changed := _diff(m.get("inputs", {}), node.inputs):
        reasons.append(f"raw inputs changed: {', '.join(changed)}")
    old_fp, new_fp = m.get("fingerprint", {}), node.fingerprint
    if old_fp.get("script") != new_fp.get("script"):
        reasons.append("script changed")
    if changed := _diff(old_fp.get("modules", {}), new_fp.get("modules", {})):
        reasons.append(f"code changed: {', '.join(changed)}")
    return f"differs from {m['key']} ({'; '.join(reasons) or 'unknown'})"


def status(plan: Plan, target: str | None, workdir: Path, out=sys.stdout) -> list[dict]:
    """Rows (step, key, labels, state, reason) for the target's nodes, upstream first."""
    if target in (None, "all"):
        roots = [n.key for n in plan.nodes.values()]
    elif target in plan.exports:
        roots = [Path(plan.exports[target][0]).name]
    else:
        key = Path(target).name
        if key not in plan.nodes:
            raise SystemExit(f"unknown target {target!r}: give a figure ({', '.join(plan.exports)}), "
                             "a store path of the current plan, or 'all'")
        roots = [key]
    order, seen = [], set()
    for r in roots:
        for n in plan.ancestors(r):
            if n.key not in seen:
                seen.add(n.key)
                order.append(n)
    rows, runs = [], set()
    for n in order:
        present = (workdir / n.path / store.MANIFEST).is_file()
        if present:
            state, reason = "present", ""
        elif stale := [role for role, k in n.upstream.items() if k in runs]:
            state, reason = "would run", f"upstream will run: {', '.join(stale)}"
        else:
            state, reason = "would run", explain_missing(plan, n, workdir)
        if state != "present":
            runs.add(n.key)
        rows.append({"step": n.step, "key": n.key, "labels": n.labels, "state": state, "reason": reason})
        lab = " ".join(f"{k}={v}" for k, v in n.labels.items())
        print(f"{state:10s} {n.step:14s} {n.key}  {lab}  {reason}", file=out)
    print(f"{sum(r['state'] == 'present' for r in rows)} present, {len(runs)} would run", file=out)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="saeflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("status", help="present / would-run nodes of a target, with reasons")
    st.add_argument("target", nargs="?", default="all")
    st.add_argument("--configfile", action="append", default=[])
    st.add_argument("--workdir", default=".")
    ve = sub.add_parser("verify", help="re-hash the store against manifests")
    ve.add_argument("--store", default="data/store")
    ve.add_argument("--remove", action="store_true", help="delete corrupt artefacts and leftover temp dirs")
    args = ap.parse_args(argv)
    if args.cmd == "status":
        workdir = Path(args.workdir).resolve()
        try:
            plan = load_plan(args.configfile, workdir)
        except cfg.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        status(plan, args.target, workdir)
        return 0
    bad = store.verify_store(args.store, remove=args.remove)
    leftovers = sorted(Path(args.store).glob("*/.tmp-*"))
    for path, problems in bad.items():
        print(f"{'removed' if args.remove else 'corrupt'}: {path}: {'; '.join(problems)}")
    for p in leftovers:
        print(f"{'removed' if args.remove else 'leftover'} temporary dir of an interrupted job: {p}")
        if args.remove:
            shutil.rmtree(p, ignore_errors=True)
    n = sum(1 for _ in store.iter_artefacts(args.store))
    print(f"{n} artefacts intact, {len(bad)} corrupt")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
