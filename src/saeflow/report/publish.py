"""The published tree: a view of the store in the layout of the seed dataset card (DATASET.md).

    data/<preset>/<dataset>/<timestamp>/     one run: every result of one (preset, dataset)
    data/figures/                            cross-model figures (exports, see saeflow.workflow.plan)
    data/README.md                           the dataset card, generated from DATASET.md

Two stages, so that every decision is content-addressed and the export only copies:

1. The `publish` node (keyed like any other) reads its upstream artefacts' manifests and writes
   `run_config.json`, `bench.json` and `layout.json` and records a timestamp (its job's time) in its
   manifest; the layout lists, for every file of the run,
   its destination in the run directory, the upstream artefact it comes from and its sha256.
2. `materialise` (the `publish_run` export rule) builds `data/<preset>/<dataset>/<timestamp>/` from
   the layout, atomically (temp directory + rename), with hard links where possible (copies
   otherwise), checking every sha256. The timestamp is the one in the publish node's manifest:
   re-publishing an unchanged result, here or from a store pulled elsewhere, finds the same
   timestamp and the same key and keeps the directory as it is.
"""

from __future__ import annotations

import os
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

from saeflow.workflow import steps, store

TIMESTAMP_FORMAT = "%Y%m%d_%H%M%S"
RUN_FILES = ("run_config.json", "bench.json")

# The Parquet tables of a published run, as Hugging Face dataset-viewer configs: glob patterns under a run
# directory; the card lists, for each config, the pattern under each run of its plan that has a matching table
# (`parquet_configs`), so the rows of a config come from the current runs only, never from an older timestamp
# of the same run, and every table carries its coordinates as columns (preset, dataset, and layer, dictionary,
# ctx_len where they apply; saeflow.workflow.jobs.coordinates). Every published table matches one config
# (tests/test_workflow.py loads each with `datasets.load_dataset`).
PARQUET_CONFIGS = {
    "entropy_features": ["entropy_comparison_*[0-9].parquet"],
    "entropy_windows": ["entropy_comparison_*_windows.parquet"],
    "h_pos": ["h_pos/layer*/ctx*.parquet"],
    # the influence dictionary's scan at the top of top_contexts/, every other dictionary's in its own folder
    "top_contexts": ["top_contexts/top_contexts_layer*.parquet", "top_contexts/*/top_contexts_layer*.parquet"],
    "latent_stats": ["top_contexts/latent_stats_layer*.parquet", "top_contexts/*/latent_stats_layer*.parquet"],
    "ctxlen_sweep": ["ctxlen_sweep/entropy_vs_context_len.parquet"],
    "ctxlen_token_vector": ["ctxlen_sweep/token_vector_vs_context_len.parquet"],
    "recon_per_sequence": ["recon/*/per_seq.parquet"],
    "probe": ["probe/probe.parquet"],
    "probe_correct": ["probe/correct.parquet"],
    "saebench": ["saebench/*/saebench.parquet"],
    "compare": ["compare/compare.parquet", "compare_control/compare.parquet"],
    "circuit": ["circuit/circuit.parquet"],
    "ablation": ["circuit/ablation.parquet"],
    "steering": ["steer/steering.parquet"],
    "geometry_pairwise": ["geometry/layer*/pairwise.parquet"],
    "autointerp_explanations": ["autointerp/*/explanations.parquet"],
    "autointerp_scores": ["autointerp/*/latent_scores.parquet"],
    "autointerp_items": ["autointerp/*/scores.parquet"],
    "autointerp_examples": ["autointerp/*/examples.parquet"],
    "feature_pages": ["inspect/*/latents.parquet"],
}


def destination(step: str, role: str, rel: str) -> str:
    """Where file `rel` of an upstream artefact (of `step`, playing `role` for the publish node) goes in the run
    directory: under the step's publish folder (saeflow.workflow.steps), except files whose names start with
    one of its `publish_top` prefixes, which sit at the top as in the seed card
    (`entropy_comparison_<site>_layer<L>.*`, `entropy_plots_<site>_layer<L>/`). A node of one dictionary and
    layer plays the role `<step>__<dictionary>__layer<L>` (recon, autointerp, inspect) and goes to
    `<publish folder>/<dictionary>_layer<L>/`; one of one dictionary, `<step>__<dictionary>` (the top_contexts scan
    of a dictionary other than the influence one), to `<publish folder>/<dictionary>/`; any other role than the
    step's own name goes to `<publish folder>_<role>/` (the control comparison: `compare_control/`)."""
    declared = steps.step(step)
    if declared.publish is None:
        raise ValueError(f"step {step} is not published (saeflow.workflow.steps: publish is None)")
    if rel.split("/", 1)[0].startswith(declared.publish_top or ("\0",)):
        return rel
    if role.startswith(f"{step}__"):
        parts = role.split("__")[1:]
        return f"{declared.publish}/{'_'.join(parts)}/{rel}"
    if role != step:
        return f"{declared.publish}_{role}/{rel}"
    return f"{declared.publish}/{rel}"


def build_layout(upstream: dict[str, Path]) -> list[dict]:
    """[{dest, role, key, step, src, sha256, bytes}] for every file of every upstream artefact (its
    manifest goes to `manifests/<role>.json`), sorted by dest; duplicate destinations are an error."""
    rows, seen = [], {}
    for role, path in sorted(upstream.items()):
        m = store.read_manifest(path)
        entries = [(rel, info) for rel, info in m["files"].items()]
        man = store.sha256_file(Path(path) / store.MANIFEST)
        entries.append((store.MANIFEST, {"sha256": man, "bytes": (Path(path) / store.MANIFEST).stat().st_size}))
        for rel, info in entries:
            dest = f"manifests/{role}.json" if rel == store.MANIFEST else destination(m["step"], role, rel)
            if dest in RUN_FILES or dest in seen:
                raise ValueError(f"published path {dest} of role {role} collides with {seen.get(dest, 'a run file')}")
            seen[dest] = role
            rows.append({"dest": dest, "role": role, "key": m["key"], "step": m["step"], "src": rel,
                         "sha256": info["sha256"], "bytes": info["bytes"]})
    return sorted(rows, key=lambda r: r["dest"])


def bench(upstream: dict[str, Path]) -> dict:
    """Wall-clock and memory of every node the run is made of (from their manifests)."""
    steps = {}
    for role, path in sorted(upstream.items()):
        m = store.read_manifest(path)
        steps[role] = {k: m.get(k) for k in ("step", "key", "wall_s", "peak_rss_mb", "device", "host", "start", "end")}
    return {"steps": steps, "total_wall_s": round(sum(s["wall_s"] or 0 for s in steps.values()), 3),
            "max_peak_rss_mb": max((s["peak_rss_mb"] or 0 for s in steps.values()), default=0)}


def new_timestamp() -> str:
    """`YYYYmmdd_HHMMSS` (UTC), taken once by the publish job and kept in its manifest."""
    return datetime.now(timezone.utc).strftime(TIMESTAMP_FORMAT)


def materialise(publish_dir: Path | str, store_root: Path | str, data_root: Path | str) -> Path:
    """Write (or find) the run directory of a publish artefact; returns its path.

    Unchanged result: the directory `<preset>/<dataset>/<timestamp>` exists and its run_config.json
    names the same publish key -> returned untouched. A source file whose sha256 differs from the
    layout (a corrupt store) fails before anything appears at the final path.
    """
    publish_dir, store_root, data_root = Path(publish_dir), Path(store_root), Path(data_root)
    manifest = store.read_manifest(publish_dir)
    labels = manifest["labels"]
    final = data_root / labels["preset"] / labels["dataset"] / manifest["timestamp"]
    if final.exists():
        existing = store.read_json(final / "run_config.json").get("publish_key") if (final / "run_config.json").is_file() else None
        if existing == manifest["key"]:
            return final
        raise FileExistsError(f"{final} holds another run (publish key {existing}, not {manifest['key']})")
    layout = store.read_json(publish_dir / "layout.json")
    tmp = final.parent / f".tmp-{final.name}-{uuid.uuid4().hex[:8]}"
    try:
        for row in layout:
            src = store_root / row["step"] / row["key"] / row["src"]
            if store.sha256_file(src) != row["sha256"]:
                raise ValueError(f"{src} does not match its manifest (sha256); run `saeflow verify`")
            store.copy_file(src, tmp / row["dest"])  # a copy (reflink where possible), never a hard link
        run_config = store.read_json(publish_dir / "run_config.json")
        run_config.update(timestamp=manifest["timestamp"], publish_key=manifest["key"])
        store.write_json_atomic(tmp / "run_config.json", run_config)
        store.copy_file(publish_dir / "bench.json", tmp / "bench.json")
        try:
            os.rename(tmp, final)
        except OSError:
            # Another run sharing this tree published the same run meanwhile: the same key, the same files.
            existing = store.read_json(final / "run_config.json").get("publish_key") \
                if (final / "run_config.json").is_file() else None
            if existing != manifest["key"]:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def verify_published(data_root: Path | str, store_root: Path | str) -> dict[str, list[str]]:
    """{run dir: problems} for every published run that does not match the store: its publish artefact is
    missing, or a file is missing, extra or differs from the sha256 the layout records (run_config.json
    and bench.json are compared with the publish artefact's copies, run_config.json up to the timestamp
    and publish key the export adds)."""
    data_root, store_root = Path(data_root), Path(store_root)
    bad = {}
    for cfg in sorted(data_root.glob("*/*/[0-9]*_[0-9]*/run_config.json")):
        run = cfg.parent
        try:
            rc = store.read_json(cfg)
            key = rc["publish_key"]
        except (ValueError, KeyError) as e:
            bad[str(run)] = [f"unreadable run_config.json ({type(e).__name__})"]
            continue
        art = store_root / "publish" / key
        if not store.is_complete(art):
            bad[str(run)] = [f"its publish artefact {key} is not in the store"]
            continue
        problems = []
        want = {row["dest"]: row["sha256"] for row in store.read_json(art / "layout.json")}
        want["bench.json"] = store.sha256_file(art / "bench.json")
        have = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {"run_config.json"}
        for rel in sorted(set(want) | have):
            if rel not in have:
                problems.append(f"missing {rel}")
            elif rel not in want:
                problems.append(f"unexpected {rel}")
            elif store.sha256_file(run / rel) != want[rel]:
                problems.append(f"{rel} differs from the store")
        expected_rc = {**store.read_json(art / "run_config.json"), "timestamp": run.name, "publish_key": key}
        if rc != expected_rc:
            problems.append("run_config.json differs from the store")
        if problems:
            bad[str(run)] = problems
    return bad


def remove_published(run_dirs: list[str]) -> None:
    """Delete published runs and their markers, so the next run materialises them again from the store."""
    for run in map(Path, run_dirs):
        try:
            key = store.read_json(run / "run_config.json").get("publish_key")
        except (OSError, ValueError):
            key = None
        shutil.rmtree(run, ignore_errors=True)
        if key:
            (run.parent / ".published" / f"{key}.json").unlink(missing_ok=True)


def published_runs(data_root: Path | str) -> list[dict]:
    """Every run directory under data_root: preset, dataset, timestamp, publish key (sorted)."""
    runs = []
    for cfg in sorted(Path(data_root).glob("*/*/*/run_config.json")):
        rc = store.read_json(cfg)
        if "publish_key" in rc:
            runs.append({k: rc[k] for k in ("preset", "dataset", "timestamp", "publish_key")})
    return runs


def _matches(dest: str, pattern: str) -> bool:
    """Whether a published file (its path in the run) matches a config's pattern. fnmatch's * also matches "/", so a
    pattern matches only files of its own depth."""
    from fnmatch import fnmatch

    return fnmatch(dest, pattern) and dest.count("/") == pattern.count("/")


def config_of(dest: str) -> str | None:
    """The viewer config whose pattern matches a published file (None: not a table of any config)."""
    for name, patterns in PARQUET_CONFIGS.items():
        if any(_matches(dest, q) for q in patterns):
            return name
    return None


def parquet_configs(runs: list[dict]) -> list[dict]:
    """Dataset-viewer `configs:` entries: for each config, its patterns under every run (``runs``: preset, dataset,
    timestamp and `dests`, the run's published files) that has a matching table; configs without any are left out."""
    out = []
    for name, patterns in PARQUET_CONFIGS.items():
        paths = [f"data/{r['preset']}/{r['dataset']}/{r['timestamp']}/{q}" for r in runs for q in patterns
                 if any(_matches(d, q) for d in r["dests"])]
        if paths:
            out.append({"config_name": name, "data_files": [{"split": "train", "path": paths if len(paths) > 1 else paths[0]}]})
    return out


def dataset_card(dataset_md: str, runs: list[dict], meta: dict, ledger_md: str | None = None) -> str:
    """README.md of the Hugging Face dataset: YAML front matter (license, pretty_name, tags, the
    Parquet `configs:` so the viewer shows the tables of these runs, and the ledger's), then DATASET.md, then the
    published runs (``runs``: preset, dataset, timestamp, publish_key and dests, the run's published files), then the
    results ledger (``ledger_md``: its LEDGER.md, exported to data/ beside ledger.parquet)."""
    import yaml

    configs = parquet_configs(runs)
    if ledger_md is not None:
        configs.insert(0, {"config_name": "ledger", "data_files": [{"split": "train", "path": "data/ledger.parquet"}]})
    front = {"license": meta["license"], "pretty_name": meta["pretty_name"], "tags": list(meta["tags"]),
             "configs": configs}
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "",
             "<!-- Generated by saeflow from DATASET.md (rule dataset_card); edit DATASET.md, not this file. -->",
             "", dataset_md.rstrip(), "", "## Published runs", "",
             "| preset | dataset | timestamp | publish key |", "|---|---|---|---|"]
    lines += [f"| {r['preset']} | {r['dataset']} | {r['timestamp']} | `{r['publish_key']}` |" for r in runs]
    if ledger_md is not None:
        # the ledger's own title becomes a section of the card
        lines += ["", ledger_md.rstrip().replace("# Results ledger", "## Results ledger", 1)]
    return "\n".join(lines) + "\n"
