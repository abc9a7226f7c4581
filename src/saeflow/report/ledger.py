"""The results ledger (seed 000's research ledger, generated): one row per (preset, dataset, layer, dictionary,
eval) of a plan, from the manifests and result files of its nodes.

Columns, as the seed ledger's: id (eval:preset/dataset/L<layer>/dictionary), key (the eval node's store key),
date, code_commit, model (repo@revision, or the embedded LM's node), hook, kind, d_sae, k, l0 (measured: the
recon node's), dataset (with its revision or generator), tokens (what the eval read), seed, device, host, wall_s,
peak_rss_mb, metric, value, lo, hi (the headline with its CI), confidence, verdict, reference, note.

Headlines (one per eval node and layer and dictionary):

    recon       variance_explained   EV = 1 - FVU, bootstrap CI over sequences (metrics.md "Reconstruction")
    probe       probe_top1_acc        test accuracy of the top-1 latent probe, Wilson interval over test windows
    autointerp  detection             own-explanation detection accuracy of the first method, two-level bootstrap
    circuit     circuit_gap@K         circuit minus random same-size sets at the smallest K, paired bootstrap
    steer       steering_effect       the latent's effect at its chosen alpha, paired bootstrap
    saebench    saebench_sae_top_1    SAEBench's sae_top_1_test_accuracy of a task, bootstrap over its test items

Verdict of a row against the reference ranges of the config (`ledger.references`: the coordinates a reference
applies to, its eval and metric, `range: [lo, hi]` and its `source`), with [l, h] the row's CI and [a, b] the range:

    novel           no reference applies
    reproduced      the value lies in [a, b] and the CI is no wider than twice the range (h - l <= 2 (b - a))
    not reproduced  the CI lies outside the range (h < a or l > b)
    inconclusive    otherwise: the CI is too wide to decide, or it straddles an end of the range
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from saeflow.evals.probe import wilson_interval
from saeflow.workflow import store
from saeflow.workflow.steps import LEDGER

COLUMNS = ["id", "key", "date", "code_commit", "model", "hook", "kind", "d_sae", "k", "l0", "preset", "dataset_name",
           "dataset", "layer", "dictionary", "eval", "tokens", "seed", "device", "host", "wall_s", "peak_rss_mb",
           "metric", "value", "lo", "hi", "confidence", "verdict", "reference", "note"]


def verdict(value: float, lo: float, hi: float, ref: dict | None) -> str:
    """The verdict of a headline (value, CI [lo, hi]) against a reference {range: [a, b]} (module docstring)."""
    if ref is None:
        return "novel"
    a, b = ref["range"]
    if hi < a or lo > b:
        return "not reproduced"
    if a <= value <= b and hi - lo <= 2 * (b - a):
        return "reproduced"
    return "inconclusive"


def reference_for(row: dict, references: list[dict]) -> dict | None:
    """The first reference whose eval, metric and every coordinate it names equal the row's."""
    for ref in references:
        if ref["eval"] != row["eval"] or ref.get("metric", row["metric"]) != row["metric"]:
            continue
        if all(ref[c] == row[c] for c in ("preset", "dataset", "layer", "dictionary") if ref.get(c) is not None):
            return ref
    return None


def headlines(step: str, path: Path, manifest: dict) -> list[dict]:
    """[{layer, dictionary, metric, value, lo, hi, confidence, tokens, note}] of one eval artefact (module docstring)."""
    lab = manifest["labels"]
    if step == "recon":
        m = store.read_json(path / "metrics.json")
        return [{"layer": lab["layer"], "dictionary": lab["dictionary"], "metric": "variance_explained",
                 **{k: m["ev"][k] for k in ("value", "lo", "hi")}, "confidence": m["confidence"], "tokens": m["n_tokens"],
                 "l0": m["l0"]["value"],
                 "note": f"FVU {m['fvu']['value']:.4g}, CE recovered {m['ce_recovered']['value']:.4g}, "
                         f"KL {m['kl']['value']:.4g}, dead {m['dead_frac']:.3g}"}]
    if step == "probe":
        t = pd.read_parquet(path / "probe.parquet")
        rows = []
        for r in t[t["k"].astype(str) == "1"].itertuples():
            lo, hi = wilson_interval(float(r.acc_sae), int(r.n_test))
            rows.append({"layer": int(r.layer), "dictionary": r.dictionary, "metric": "probe_top1_acc",
                         "value": float(r.acc_sae), "lo": lo, "hi": hi, "confidence": 0.95, "tokens": None,
                         "note": f"{r.task}; raw top-1 {r.acc_raw:.3g}, SAE - raw {r.diff:+.3g} "
                                 f"[{r.diff_lo:+.3g}, {r.diff_hi:+.3g}]; {int(r.n_test)} test windows"})
        return rows
    if step == "autointerp":
        s = store.read_json(path / "summary.json")
        method = s["methods"][0]
        by = {(r["control"], r["task"]): r for r in s["summary"] if r["method"] == method and r["group"] == "all"}
        d = by[("none", "detection")]
        note = f"{method}; {d['n_latents']} latents, {d['n_items']} items"
        if ("none", "fuzzing") in by:
            f = by[("none", "fuzzing")]
            note += f"; fuzzing {f['accuracy']:.3g} [{f['lo']:.3g}, {f['hi']:.3g}]"
        if ("gap", "detection") in by:
            g = by[("gap", "detection")]
            note += (f"; vs shuffled explanations {round(g['accuracy'], 9):+.3g} [{round(g['lo'], 9):+.3g}, "
                     f"{round(g['hi'], 9):+.3g}]")
        return [{"layer": lab["layer"], "dictionary": lab["dictionary"], "metric": "detection",
                 "value": d["accuracy"], "lo": d["lo"], "hi": d["hi"], "confidence": s["confidence"], "tokens": None,
                 "note": note}]
    if step == "circuit":
        t = pd.read_parquet(path / "circuit.parquet")
        k = int(t["k"].min())
        rows = []
        for r in t[(t["scope"] == "layer") & (t["k"] == k)].itertuples():
            rows.append({"layer": int(str(r.layers).split(",")[-1]),   # a layer-scope row's one layer
                         "dictionary": r.dictionary, "metric": f"circuit_gap@{k}", "value": float(r.gap),
                         "lo": float(r.gap_lo), "hi": float(r.gap_hi), "confidence": 0.95, "tokens": None,
                         "note": f"{r.task}; circuit {r.acc_circuit:.3g} vs random {r.acc_random:.3g}, ceiling "
                                 f"{r.acc_ceiling:.3g} (faithfulness {r.faithfulness:.3g}); {int(r.n_test)} test windows"})
        return rows
    if step == "steer":
        s = store.read_json(path / "summary.json")
        d = s["directions"]["latent"]
        dom = s["directions"].get("diff_of_means", {})
        return [{"layer": s["layer"], "dictionary": s["dictionary"], "metric": "steering_effect",
                 "value": d["effect"], "lo": d["effect_lo"], "hi": d["effect_hi"], "confidence": 0.95, "tokens": None,
                 "note": f"latent {d.get('latent')} at alpha {d['best_alpha']} (fluency {'ok' if d['fluency_ok'] else 'broken'});"
                         f" diff of means {dom.get('effect', float('nan')):+.3g}; {s['contrast'].get('kind', '')}"}]
    if step == "saebench":
        s = store.read_json(path / "summary.json")
        rows = []
        for r in s["results"]:
            lo, hi = r["sae_top_1_ci"]
            llm_lo, llm_hi = r["llm_top_1_ci"]
            rows.append({"layer": r["layer"], "dictionary": r["dictionary"], "metric": "saebench_sae_top_1",
                         "value": r["sae_top_1_test_accuracy"], "lo": lo, "hi": hi, "confidence": 0.95, "tokens": None,
                         "note": f"task {s['task']} ({len(s['classes'])} classes, {s['train_size']}/{s['test_size']} "
                                 f"items); llm_top_1 {r['llm_top_1_test_accuracy']:.3g} [{llm_lo:.3g}, {llm_hi:.3g}], "
                                 f"sae_test_accuracy {r['sae_test_accuracy']:.3g}, llm_test_accuracy "
                                 f"{r['llm_test_accuracy']:.3g}"})
        return rows
    raise ValueError(f"no ledger headline for step {step!r}; ledger steps: {', '.join(LEDGER)}")


def ledger_rows(evals: dict[str, Path], dicts: dict[str, Path], config: dict, references: list[dict]) -> pd.DataFrame:
    """The ledger of the eval artefacts ``evals`` (role -> directory), with the dictionary artefacts ``dicts``
    (role -> directory) that describe their dictionaries, under ``config`` (models, datasets, seed)."""
    dict_info = {}
    for d in dicts.values():
        m = store.read_manifest(d)
        p = m["params"]
        dict_info[(m["labels"]["preset"], m["labels"]["dataset"], m["labels"]["layer"], m["labels"]["dictionary"])] = {
            "hook": p["hook_in"] + (f" -> {p['hook_out']}" if p.get("hook_out") else ""), "kind": m["labels"]["kind"],
            "d_sae": p.get("d_sae") or (m.get("describe") or {}).get("d_sae"), "k": p.get("k")}
    recon_l0 = {}
    rows = []
    for role, path in sorted(evals.items()):
        m = store.read_manifest(path)
        step, lab = m["step"], m["labels"]
        preset = config["presets"][lab["preset"]]
        ds_name = lab["dataset"]
        for h in headlines(step, path, m):
            coords = (lab["preset"], ds_name, h["layer"], h["dictionary"])
            if step == "recon":
                recon_l0[coords] = h["l0"]
            info = dict_info.get(coords, {})
            row = {"id": f"{step}:{lab['preset']}/{ds_name}/L{h['layer']}/{h['dictionary']}", "key": m["key"],
                   "date": (m.get("end") or "")[:10], "code_commit": (m.get("git_commit") or "")[:12] or None,
                   "model": _model_ref(preset), "hook": info.get("hook"), "kind": info.get("kind"),
                   "d_sae": info.get("d_sae"), "k": info.get("k"), "preset": lab["preset"], "dataset_name": ds_name,
                   "dataset": _dataset_ref(config["datasets"][ds_name]), "layer": int(h["layer"]),
                   "dictionary": h["dictionary"], "eval": step, "tokens": h["tokens"], "seed": config.get("seed", 0),
                   "device": m.get("device"), "host": m.get("host"), "wall_s": m.get("wall_s"),
                   "peak_rss_mb": m.get("peak_rss_mb"), "metric": h["metric"], "value": h["value"], "lo": h["lo"],
                   "hi": h["hi"], "confidence": h["confidence"], "note": h["note"]}
            ref = reference_for(row, references)
            row["verdict"] = verdict(row["value"], row["lo"], row["hi"], ref)
            row["reference"] = f"[{ref['range'][0]:g}, {ref['range'][1]:g}] {ref.get('source', '')}".strip() if ref else None
            rows.append(row)
    for row in rows:
        row["l0"] = recon_l0.get((row["preset"], row["dataset_name"], row["layer"], row["dictionary"]))
    df = pd.DataFrame(rows, columns=COLUMNS)
    return df.sort_values(["preset", "dataset_name", "eval", "dictionary", "layer"], kind="stable").reset_index(drop=True)


def _model_ref(preset: dict) -> str:
    m = preset["model"]
    if m["source"] == "hf":
        return f"{m['hf_id']}@{m['revision'][:12]}"
    base = f"embedded ({m['n_layers']} layers, d_model {m['d_model']}, trained on {m['train_dataset']})"
    return base + (f", {preset['control']['kind']} control" if preset.get("control") else "")


def _dataset_ref(spec: dict) -> str:
    if spec["source"] == "hf":
        return f"{spec['repo']}@{spec['revision'][:12]}:{spec['split']}"
    if spec["source"] == "synthetic":
        return f"synthetic (seed {spec['seed']}, {spec['n_docs']} docs)"
    if spec["source"] == "mixture":
        return "mixture of " + ", ".join(spec["parts"])
    return f"stdlib ({len(spec['packages'])} packages)"


def html(df: pd.DataFrame) -> str:
    """ledger.html: the Markdown table's rows as one self-contained HTML table (for `snakemake --report`)."""
    import html as h

    rows = markdown(df).splitlines()[5:]
    head, body = rows[0], rows[2:]

    def cells(line: str, tag: str) -> str:
        return "".join(f"<{tag}>{h.escape(c.strip())}</{tag}>" for c in line.strip().strip("|").split(" | "))

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Results ledger</title><style>"
            "body{font:13px system-ui,sans-serif;margin:16px}table{border-collapse:collapse}"
            "th,td{border:1px solid #d0d7de;padding:3px 6px;vertical-align:top}th{background:#f0f3f6}</style></head>"
            f"<body><h1>Results ledger</h1><table><thead><tr>{cells(head, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(r, 'td')}</tr>" for r in body) + "</tbody></table></body></html>\n")


def markdown(df: pd.DataFrame) -> str:
    """LEDGER.md: the table a reader skims (id, date, commit, model, hook, kind, d_sae, k / L0, dataset, tokens,
    device, wall time, headline with CI, verdict, note)."""
    def fmt(v, spec="{:.3g}"):
        return "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else spec.format(v)

    def text(v):
        # pandas >= 3 reads a string column's missing cells back as NaN, not None
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)

    head = ["id", "date", "commit", "model", "hook", "kind", "d_sae", "k / L0", "dataset", "tokens", "device",
            "wall s", "result (95% CI)", "verdict", "note"]
    lines = ["# Results ledger", "",
             ("Generated by saeflow (rule `ledger`) from the manifests of the current config's eval nodes; one row per "
              "(preset, dataset, layer, dictionary, eval). Verdicts compare each headline's CI with the config's "
              "reference ranges (`ledger.references`): novel, reproduced, not reproduced, inconclusive."), "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in df.itertuples():
        cells = [r.id, r.date, text(r.code_commit), r.model, text(r.hook), text(r.kind), fmt(r.d_sae, "{:.0f}"),
                 f"{fmt(r.k, '{:.0f}')} / {fmt(r.l0)}", r.dataset, fmt(r.tokens, "{:.0f}"),
                 text(r.device) + (f" ({text(r.host)})" if text(r.host) else ""), fmt(r.wall_s, "{:.1f}"),
                 f"{r.metric} = {fmt(r.value)} [{fmt(r.lo)}, {fmt(r.hi)}]",
                 r.verdict + (f" ({text(r.reference)})" if text(r.reference) else ""), text(r.note)]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"
