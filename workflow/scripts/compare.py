"""Rule compare: head-to-head verdicts between pairs of arms, per layer (saeflow.evals.compare). An arm is a
(preset, dictionary); its upstreams are `recon_L<L>_a<i>` and, where they exist, `probe_a<i>`, `h_pos_a<i>` and
`autointerp_L<L>_a<i>`.
Two kinds of node, one rule: every pair of a preset's compared dictionaries (`compare.dictionaries`), and each
dictionary of a preset against the same dictionary of its randomized-model control (`controls`).

Paired bootstrap (A - B) of the recon headlines on the same eval windows and of probe accuracy on the same test
windows; unpaired bootstrap of mean H_pos and of auto-interp accuracy (detection, fuzzing: per latent, its own
explanation) over each side's own latents; "A better" / "B better" / "no difference" ("A higher" / "B higher"
where no direction is better)."""
import numpy as np
import pandas as pd

from saeflow import tensors
from saeflow.evals import compare, locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
kw = {"n_resamples": p["n_resamples"], "confidence": p["confidence"], "seed": p["seed"]}
arms = p["arms"]
name = [a["label"] for a in arms]


def probe_correct(i: int, L: int) -> pd.DataFrame | None:
    if f"probe_a{i}" not in inputs:
        return None
    c = pd.read_parquet(inputs[f"probe_a{i}"] / "correct.parquet")
    c = c[(c["layer"] == L) & (c["dictionary"] == arms[i]["dictionary"])]
    return c if len(c) else None


def mean_h_pos(i: int, L: int) -> tuple[int, np.ndarray] | None:
    """Per latent, its mean H_pos over its ok events at the largest context length of the h_pos node."""
    if f"h_pos_a{i}" not in inputs:
        return None
    ctx, h = locality.mean_h_pos(inputs[f"h_pos_a{i}"], L)
    return ctx, h.to_numpy()


def autointerp_accuracy(i: int, L: int) -> pd.DataFrame | None:
    """Per method, task and latent: its auto-interp accuracy with its own explanation (control "none")."""
    if f"autointerp_L{L}_a{i}" not in inputs:
        return None
    s = pd.read_parquet(inputs[f"autointerp_L{L}_a{i}"] / "latent_scores.parquet")
    return s[s["control"] == "none"]


rows = []
for L in p["layers"]:
    manifests = [store.read_manifest(inputs[f"recon_L{L}_a{i}"]) for i in range(len(arms))]
    windows = {m["upstream"]["windows"] for m in manifests}
    if len(windows) != 1:  # paired items must be the same windows, not just as many
        raise ValueError(f"compare: the recon nodes of layer {L} read different windows {sorted(windows)}")
    recon = [(m["params"], pd.read_parquet(inputs[f"recon_L{L}_a{i}"] / "per_seq.parquet"))
             for i, m in enumerate(manifests)]
    for i, j in p["pairs"]:
        (pa, sa), (pb, sb) = recon[i], recon[j]
        same_site = (pa["hook_in"], pa["hook_out"]) == (pb["hook_in"], pb["hook_out"])
        found = compare.compare_recon(sa, sb, same_site, **kw)
        ca, cb = probe_correct(i, L), probe_correct(j, L)
        for k in (ca["k"].unique() if ca is not None and cb is not None else []):
            xa, xb = (c[c["k"] == k].sort_values("window") for c in (ca, cb))
            if xa["window"].tolist() != xb["window"].tolist():
                raise ValueError(f"probe test windows of {name[i]!r} and {name[j]!r} differ at layer {L}")
            found.append(compare.compare_correct(xa["correct_sae"], xb["correct_sae"], f"probe_acc@{k}", "probe", k,
                                                 **kw))
        ha, hb = mean_h_pos(i, L), mean_h_pos(j, L)
        if ha is not None and hb is not None and len(ha[1]) and len(hb[1]):
            found.append(compare.compare_unpaired_means(ha[1], hb[1], f"mean_H_pos@ctx{ha[0]}", "h_pos", str(ha[0]),
                                                        **kw))
        aa, ab = autointerp_accuracy(i, L), autointerp_accuracy(j, L)
        if aa is not None and ab is not None:
            for (method, task), ga in aa.groupby(["method", "task"]):
                gb = ab[(ab["method"] == method) & (ab["task"] == task)]
                if len(gb):
                    found.append(compare.compare_unpaired_means(ga["accuracy"], gb["accuracy"], f"{task} ({method})",
                                                                "autointerp", method, True, **kw))
        rows += [{"layer": L, "a": name[i], "b": name[j], "preset_a": arms[i]["preset"], "preset_b": arms[j]["preset"],
                  "dictionary_a": arms[i]["dictionary"], "dictionary_b": arms[j]["dictionary"],
                  "site_a": pa["hook_out"] or pa["hook_in"], "site_b": pb["hook_out"] or pb["hook_in"], **r}
                 for r in found]
table = pd.DataFrame(rows).assign(preset=node["labels"]["preset"], dataset=node["labels"]["dataset"],
                                  comparison=p["kind"])
tensors.require_finite({c: table[c] for c in ("value_a", "value_b", "diff", "diff_lo", "diff_hi")}, "compare")
pair_names = [f"{name[i]} vs {name[j]}" for i, j in p["pairs"]]
summary = {"kind": p["kind"], "arms": arms, "pairs": pair_names, "layers": p["layers"], "confidence": p["confidence"],
           "verdicts": {pn: table[table["a"] + " vs " + table["b"] == pn]["verdict"].value_counts().to_dict()
                        for pn in pair_names},
           "rows": table.to_dict(orient="records")}
with store.write_artefact(out, node) as art:
    table.to_parquet(art.path("compare.parquet"), index=False)
    table.to_csv(art.path("compare.csv"), index=False)
    store.write_json_atomic(art.path("summary.json"), summary)
    art.record(verdicts=summary["verdicts"])
print(table[["layer", "a", "b", "metric", "value_a", "value_b", "diff", "diff_lo", "diff_hi", "verdict"]].to_string())
