"""`saeflow` command line: status of the plan against the store, and store verification.

    saeflow status [TARGET] [--configfile F]   which nodes are present, which would run, and why
    saeflow verify [--remove] [--store DIR]    re-hash every artefact against its manifest, and the
                                               published tree against the store
    saeflow ledger [--configfile F] [--out DIR]  the results ledger of the plan, from the eval artefacts
                                               present in the store (Markdown; --out: also Parquet and CSV)
    saeflow sync push --repo USER/NAME [--data data] [--prune] [--dry-run]
                                               upload to a Hugging Face dataset what it lacks
    saeflow sync pull --repo USER/NAME [--data data] [--all | --configfile F] [--published]
                                               install store artefacts from it, verified and atomically
                                               (`--remote-dir DIR` instead of --repo: a plain directory)

Start-up stays light (no torch / sae_lens imports): it only parses the config and computes keys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from saeflow.workflow import config as cfg
from saeflow.workflow import store
from saeflow.workflow.plan import Plan, build_plan


def load_plan(configfiles: list[str], workdir: Path) -> Plan:
    """The plan of the config files (default: config/config.yaml of `workdir`), merged as Snakemake
    merges them and validated as the Snakefile validates them. Raises ConfigError (one line) for a
    missing or unreadable file, a duplicated key, or an invalid config."""
    paths = configfiles or [str(workdir / "config" / "config.yaml")]
    conf: dict = {}
    for p in paths:
        _merge(conf, cfg.load_config_file(p))
    return build_plan(cfg.validate(conf, workdir=workdir), workdir)


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
    ve.add_argument("--remove", action="store_true",
                    help="delete corrupt artefacts, their dependents and published runs, and dead jobs' temp dirs")
    ve.add_argument("--figures", default="figures", help="the exported figures directory (figures_dir)")
    le = sub.add_parser("ledger", help="the results ledger of the plan (Markdown on stdout)")
    le.add_argument("--configfile", action="append", default=[])
    le.add_argument("--workdir", default=".")
    le.add_argument("--out", default=None, help="also write LEDGER.md, ledger.parquet and ledger.csv here")
    _add_sync_parser(sub)
    args = ap.parse_args(argv)
    if args.cmd == "sync":
        return sync_command(args)
    if args.cmd in ("status", "ledger"):
        workdir = Path(args.workdir).resolve()
        try:
            plan = load_plan(args.configfile, workdir)
        except cfg.ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:  # a config found, but --workdir is not a checkout (no workflow scripts to key)
            print(f"error: --workdir {workdir} is not a saeflow checkout ({type(e).__name__}: {e})", file=sys.stderr)
            return 2
        if args.cmd == "ledger":
            return ledger_command(plan, workdir, args.out)
        status(plan, args.target, workdir)
        return 0
    return verify_command(args)


def ledger_command(plan: Plan, workdir: Path, out_dir: str | None, out=sys.stdout) -> int:
    """`saeflow ledger`: the ledger node's rows (saeflow.report.ledger) computed from the eval artefacts of the plan
    that are complete in the store, whether or not the ledger node ran; the ones missing are counted on stderr."""
    from saeflow.report import ledger
    from saeflow.workflow.steps import LEDGER

    nodes = [n for n in plan.nodes.values() if n.step == "ledger"]
    if not nodes:
        print(f"error: the plan has no eval node with a ledger headline ({', '.join(LEDGER)})", file=sys.stderr)
        return 2
    node = nodes[0]
    present = {role: workdir / plan.nodes[k].path for role, k in node.upstream.items()
               if store.is_complete(workdir / plan.nodes[k].path)}
    evals = {r: d for r, d in present.items() if r.startswith("e")}
    dicts = {r: d for r, d in present.items() if r.startswith("d")}
    missing = sum(r.startswith("e") for r in node.upstream) - len(evals)
    df = ledger.ledger_rows(evals, dicts, node.params, node.params["references"])
    text = ledger.markdown(df)
    print(text, end="", file=out)
    if missing:
        print(f"{missing} of the plan's eval nodes are not in the store yet (run snakemake): left out", file=sys.stderr)
    if out_dir:
        o = Path(out_dir)
        o.mkdir(parents=True, exist_ok=True)
        (o / "LEDGER.md").write_text(text)
        df.to_parquet(o / "ledger.parquet", index=False)
        df.to_csv(o / "ledger.csv", index=False)
    return 0


def verify_command(args) -> int:
    """`saeflow verify`: re-hash every artefact of the store, and the published tree against the store.

    With --remove: delete the corrupt artefacts, every artefact that depends on them, the published runs
    built on them, exported figures copied from them and the temporary directories of dead jobs (never a
    live job's: its key lock is held); the next `snakemake` rebuilds exactly what was removed."""
    from saeflow.report import publish

    root = Path(args.store)
    if not root.is_dir():
        print(f"error: --store {root}: no such directory (the store is <data>/store, default data/store)",
              file=sys.stderr)
        return 2
    data_root = root.parent
    bad = store.verify_store(root)
    for path, problems in bad.items():
        print(f"corrupt: {path}: {'; '.join(problems)}")
    report = store.repair(root, bad) if args.remove else None
    if report:
        for path in report["removed"]:
            why = report["dependents"].get(path)
            print(f"removed: {path}" + (f" (depends on corrupt {', '.join(why)})" if why else ""))
        for p in report["temp_removed"]:
            print(f"removed temporary dir of an interrupted job: {p}")
        for p in report["temp_live"]:
            print(f"kept temporary dir of a live job: {p}")
    else:
        for p, live in store.temp_dirs(root):
            print(f"{'live job' if live else 'leftover'} temporary dir: {p}")
    published = publish.verify_published(data_root, root)
    for run, problems in published.items():
        print(f"{'removed' if args.remove else 'corrupt'} published run: {run}: {'; '.join(problems)}")
    if args.remove:
        publish.remove_published(list(published))
        gone = report["removed_sha256"]
        for d in {Path(args.figures), data_root / "figures"}:
            for f in sorted(d.glob("*.png")) if d.is_dir() and gone else []:
                if store.sha256_file(f) in gone:
                    f.unlink()
                    print(f"removed export made from a removed artefact: {f}")
    n = sum(1 for _ in store.iter_artefacts(root))
    print(f"{n} artefacts intact, {len(bad)} corrupt, {len(published)} published runs differing from the store"
          + (f"; removed {len(report['removed'])} artefacts (with dependents)" if report else ""))
    return 1 if (bad or published) and not args.remove else 0


def _add_sync_parser(sub) -> None:
    sy = sub.add_parser("sync", help="push data/ to / pull store artefacts from a Hugging Face dataset repo")
    ssub = sy.add_subparsers(dest="sync_cmd", required=True)
    for name, text in (("push", "upload what the remote lacks or has different (one commit per batch)"),
                       ("pull", "install remote store artefacts, verified against their manifests")):
        p = ssub.add_parser(name, help=text)
        where = p.add_mutually_exclusive_group(required=True)
        where.add_argument("--repo", help="Hugging Face dataset repo USER/NAME (endpoint: HF_ENDPOINT)")
        where.add_argument("--remote-dir", help="a plain directory laid out like the repo, instead of --repo")
        p.add_argument("--data", default="data", help="local data directory (the store is DATA/store)")
        p.add_argument("--revision", default="main")
        p.add_argument("--token-env", default="HF_TOKEN",
                       help="environment variable holding the token (unset: the huggingface_hub default login)")
        p.add_argument("--no-xet", action="store_true", help="upload with the plain LFS protocol, not Xet")
        if name == "push":
            p.add_argument("--prune", action="store_true", help="delete remote files under data/ that are not local")
            p.add_argument("--dry-run", action="store_true", help="list what would change, touch nothing")
            p.add_argument("--batch-size", type=int, default=50, help="files per commit")
            p.add_argument("--private", action="store_true", help="create the repo private if it does not exist")
            p.add_argument("--dictionaries", action="store_true",
                           help="push the trained dictionaries of the config to --repo as a sae-lens model repo "
                                "(one folder per dictionary and hook, a model card) instead of data/ to a dataset repo")
            p.add_argument("--configfile", action="append", default=[],
                           help="with --dictionaries: the config whose dictionaries to push (default: config/config.yaml)")
            p.add_argument("--workdir", default=".", help="with --dictionaries: workflow directory, for planning keys")
        else:
            which = p.add_mutually_exclusive_group()
            which.add_argument("--all", action="store_true", help="every artefact on the remote")
            which.add_argument("--configfile", action="append", default=[],
                               help="pull the nodes planned by this config (default: config/config.yaml)")
            p.add_argument("--workdir", default=".", help="workflow directory, for planning keys")
            p.add_argument("--published", action="store_true", help="also pull the published tree and the card")
            p.add_argument("--overwrite-published", action="store_true",
                           help="replace published files that differ locally (default: keep them)")


def _push_dictionaries(args, remote, say) -> int:
    """`saeflow sync push --dictionaries`: the config's trained dictionaries present in the store, as a sae-lens model
    repo (saeflow.hub.dictionaries)."""
    from saeflow.hub import dictionaries

    workdir = Path(args.workdir).resolve()
    plan = load_plan(args.configfile, workdir)
    trained = [n for n in plan.nodes.values() if n.step == "train_dict"]
    present = [workdir / n.path for n in trained if store.is_complete(workdir / n.path)]
    if not present:
        say(f"error: none of the config's {len(trained)} trained dictionaries is in the store (run snakemake first)",
            err=True)
        return 1
    if len(present) < len(trained):
        say(f"{len(trained) - len(present)} of the config's trained dictionaries are not in the store: not pushed",
            err=True)
    rep = dictionaries.push_dictionaries(present, remote, (plan.config.get("publish") or {}).get("license", "cc-by-4.0"),
                                         dry_run=args.dry_run)
    for p in rep["upload"] if args.dry_run else []:
        say(f"would upload {p}")
    say(f"{remote.describe()}: {len(rep['dictionaries'])} dictionaries; {'would upload' if args.dry_run else 'uploaded'} "
        f"{len(rep['upload'])} files, {rep['unchanged']} unchanged, {rep['commits']} commits")
    return 0


def sync_command(args) -> int:
    """`saeflow sync push|pull`. The token is read from the environment and never printed: every message
    that leaves this function has it masked."""
    import os

    from saeflow.hub import remotes, sync

    token = os.environ.get(args.token_env) or None

    def clean(text: str) -> str:
        return text.replace(token, "<token>") if token else text

    def say(msg: str, err: bool = False) -> None:
        print(clean(msg), file=sys.stderr if err else sys.stdout, flush=True)

    dictionaries = args.sync_cmd == "push" and args.dictionaries
    if args.remote_dir:
        remote = remotes.LocalDirRemote(args.remote_dir)
    else:
        private = True if getattr(args, "private", False) else None
        remote = remotes.HubRemote(args.repo, token=token, revision=args.revision,
                                   use_xet=False if args.no_xet else None, private=private,
                                   repo_type="model" if dictionaries else "dataset")
    try:
        if dictionaries:
            return _push_dictionaries(args, remote, say)
        if args.sync_cmd == "push":
            rep = sync.push(args.data, remote, prune=args.prune, dry_run=args.dry_run, batch_size=args.batch_size,
                            progress=say)
            if args.dry_run:
                for p in rep["upload"]:
                    say(f"would upload {p}")
                for p in rep["delete"]:
                    say(f"would delete {p}")
            for art, why in sorted(rep["skipped"].items()):
                say(f"not pushed (corrupt or incomplete locally): {args.data}/{art}: {why}", err=True)
            verb = "would upload" if args.dry_run else "uploaded"
            n_up = len(rep["upload"]) if args.dry_run else rep["uploaded"]
            n_del = len(rep["delete"]) if args.dry_run else rep["deleted"]
            say(f"{remote.describe()}: {verb} {n_up} files, {'would delete' if args.dry_run else 'deleted'} "
                f"{n_del}, {rep['unchanged']} unchanged, {rep['commits']} commits")
            return 1 if rep["skipped"] else 0
        keys = None
        if not args.all:
            workdir = Path(args.workdir).resolve()
            keys = set(load_plan(args.configfile, workdir).nodes)
        rep = sync.pull(args.data, remote, keys=keys, published=args.published,
                        overwrite_published=args.overwrite_published, progress=say)
        for name, why in sorted(rep.rejected.items()):
            say(f"rejected {name}: {why}", err=True)
        for path, why in sorted(rep.ignored.items()):
            say(f"ignored remote file {path}: {why}", err=True)
        for rel in rep.kept_local:
            say(f"kept local {args.data}/{rel} (differs from the remote; --overwrite-published replaces it)")
        say(f"{remote.describe()}: pulled {len(rep.pulled)} artefacts, {len(rep.present)} already present, "
            f"{len(rep.rejected)} rejected, {len(rep.incomplete_remote)} incomplete on the remote"
            + (f", {len(rep.missing)} planned not on the remote" if keys is not None else "")
            + (f"; published files: {len(rep.published)} pulled, {len(rep.published_present)} present"
               if args.published else ""))
        return 1 if rep.rejected else 0
    except cfg.ConfigError as e:
        say(f"error: {e}", err=True)
        return 2
    except Exception as e:  # noqa: BLE001 - one line, token masked, instead of a traceback
        say(f"error: sync {args.sync_cmd} failed: {type(e).__name__}: {e}", err=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
