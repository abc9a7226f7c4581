"""Rule inspect: the feature page of one dictionary at one layer (saeflow.report.feature_pages): features.html
(self-contained), latents.parquet (the table it shows) and summary.json (what the run's index lists)."""
import numpy as np
import pandas as pd

from saeflow.evals import decoder, locality
from saeflow.models import lm
from saeflow.report import feature_pages
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
lab = node["labels"]
device = jobs.device_of(node)
L = p["layer"]
stats = pd.read_parquet(inputs["events"] / f"latent_stats_layer{L}.parquet")
events = pd.read_parquet(inputs["events"] / f"top_contexts_layer{L}.parquet")
analysed, h_rows, infl, autocorr, expl, scores, methods = {}, None, None, None, None, None, []
if "h_pos" in inputs:
    ctx = max(store.read_manifest(inputs["h_pos"])["params"]["ctx_lens"])
    h_rows = pd.read_parquet(inputs["h_pos"] / f"layer{L}/ctx{ctx}.parquet")
    infl = dict(np.load(inputs["h_pos"] / f"layer{L}/influences_ctx{ctx}.npz"))
    analysed["H_pos"] = sorted(h_rows["feature_id"].unique().tolist())
if "autointerp" in inputs:
    summary = store.read_json(inputs["autointerp"] / "summary.json")
    methods = summary["methods"]
    expl = pd.read_parquet(inputs["autointerp"] / "explanations.parquet")
    scores = pd.read_parquet(inputs["autointerp"] / "latent_scores.parquet")
    scores = scores[scores["control"] == "none"]
    analysed["auto-interp"] = sorted(expl["feature_id"].unique().tolist())
if "autocorr" in inputs:
    autocorr = pd.read_csv(inputs["autocorr"] / f"layer{L}/feature_summary.csv")
    analysed["autocorrelation"] = sorted(autocorr["feature_id"].tolist())
shown = feature_pages.select_latents(stats, analysed, p["n_sample"], p["seed"])
ids = np.array(list(shown), dtype=np.int64)

model = lm.load_model(inputs["lm"] / "model", device)
W_dec = locality.load_layer_dicts({L: inputs["dict"]}, device)[L].module.W_dec.detach()
outputs = dict(zip(shown, decoder.top_tokens(decoder.logit_weights(model, W_dec[ids]), p["n_logits"], model.tokenizer)))
nb_ids, nb_cos = decoder.nearest_latents(W_dec, ids, p["n_neighbours"])
neighbours = {int(a): list(zip(nb_ids[i].tolist(), nb_cos[i].tolist())) for i, a in enumerate(ids)}
records = feature_pages.latent_records(shown, stats, events, outputs, neighbours, h_rows, infl, autocorr, expl, scores,
                                       p["max_contexts"])
d_sae = int(W_dec.shape[0])
n_tokens = int(store.read_manifest(inputs["events"])["counts"][str(L)]["n_tokens"])
live = int((stats["n_fired"] > 0).sum())
title = f"{lab['preset']} / {lab['dataset']}: {lab['dictionary']}, layer {L}"
meta = {"title": title, "index": "../../inspect_index/index.html", "methods": methods, "has_h_pos": h_rows is not None,
        "has_autocorr": autocorr is not None,
        "subtitle": [(f"{lab['kind']} at {p['hook_in']}: {d_sae} latents, {live} of them fire on the {n_tokens:,} "
                      "scanned tokens (train windows, BOS left out)"),
                     (f"{len(records)} latents shown: those H_pos, auto-interp and autocorrelation analysed, and "
                      f"{sum(r['why'] == ['sample'] for r in records)} sampled (seed {p['seed']}) from the live ones")]}
table = pd.DataFrame([{k: r[k] for k in ("id", "n_fired", "density", "max_act", "mean_act", "h_pos", "autocorr_len")}
                      | {"why": ", ".join(r["why"])} for r in records]).assign(**jobs.coordinates(node))
# float columns on every page, NaN where not computed (a page without H_pos would otherwise have a null-typed column)
table = table.astype({c: "float64" for c in ("density", "max_act", "mean_act", "h_pos", "autocorr_len")})
firing = stats[stats["n_fired"] > 0]
first = methods[0] if methods else None
acc = {t: float(scores[(scores["method"] == first) & (scores["task"] == t)]["accuracy"].mean())
       for t in ("detection", "fuzzing")} if first else {}
page_summary = {"dictionary": lab["dictionary"], "layer": L, "site": lab["site"], "kind": lab["kind"], "d_sae": d_sae,
                "live": live, "shown": len(records), "median_density": float(firing["density"].median()) if live else None,
                "mean_h_pos": float(np.nanmean([r["h_pos"] for r in records if r["h_pos"] is not None]))
                if any(r["h_pos"] is not None for r in records) else None,
                "method": first, **acc}
with store.write_artefact(out, node, device=device) as art:
    art.path("features.html").write_text(feature_pages.page(meta, records), encoding="utf-8")
    table.to_parquet(art.path("latents.parquet"), index=False)
    store.write_json_atomic(art.path("summary.json"), page_summary)
    art.record(page=page_summary)
print(page_summary)
