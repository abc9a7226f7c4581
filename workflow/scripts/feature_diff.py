"""Rule feature_diff: latents of preset A's dictionary that preset B's lacks, and the reverse, on the same
windows (saeflow.evals.feature_diff; InterpGPT's feature_diff.json): activation-correlation matching with a
misaligned-window null, decoder-cosine matching, the asymmetry ratio and the top contexts of the unmatched."""
import numpy as np
import pandas as pd
import torch
from safetensors.numpy import load_file

from saeflow import tensors
from saeflow.data import activations
from saeflow.evals import feature_diff as fd
from saeflow.evals import locality
from saeflow.models import lm
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
models = {s: lm.load_model(inputs[f"lm_{s}"] / "model", device) for s in "ab"}
tokens = load_file(str(inputs["windows"] / "windows.safetensors"))["eval_tokens"][: p["n_windows"]]
T1 = tokens.shape[1] - 1  # positions per window once BOS is left out
names = {"a": p["presets"][0], "b": p["presets"][1]}


def code_batches(specs):
    """Yield (offset, {(side, layer): codes [b, T1, d_sae]}) over the windows: one forward per model and batch
    reads every layer's site."""
    hooks = {s: sorted({spec[s].hook_in for spec in specs.values()}) for s in "ab"}
    streams = {s: activations.site_batches(models[s], tokens, hooks[s], p["batch_size"]) for s in "ab"}
    for (i, xa), (_, xb) in zip(streams["a"], streams["b"]):
        acts = {"a": xa, "b": xb}
        with torch.no_grad():
            out = {}
            for L, spec in specs.items():
                for s in "ab":
                    x = acts[s][spec[s].hook_in]
                    out[(s, L)] = spec[s].codes(x.reshape(-1, x.shape[-1])).reshape(x.shape[0], T1, -1)
        yield i * T1, out


def context(window: int, pos: int, width: int = 10) -> str:
    tok = models["a"].tokenizer
    ids = tokens[window]
    left = tok.decode(ids[max(1, pos - width): pos].tolist())
    return f"{left}[[{tok.decode([int(ids[pos])])}]]"


rows, summary = [], {"presets": p["presets"], "dictionary": p["dictionary"], "threshold": p["threshold"],
                     "n_windows": len(tokens), "n_tokens": len(tokens) * T1, "layers": {}}
specs = {L: {s: locality.load_layer_dicts({L: inputs[f"dict_{s}_L{L}"]}, device)[L] for s in "ab"}
         for L in p["layers"]}
d = {L: {s: int(specs[L][s].module.W_dec.shape[0]) for s in "ab"} for L in p["layers"]}
# pass 1, every layer at once: the correlations and their null
corr = {L: fd.CodeCorrelation(d[L]["a"], d[L]["b"], device) for L in p["layers"]}
null = {L: fd.CodeCorrelation(d[L]["a"], d[L]["b"], device) for L in p["layers"]}
for _, f in code_batches(specs):
    for L in p["layers"]:
        fa, fb = f[("a", L)].reshape(-1, d[L]["a"]), f[("b", L)].reshape(-1, d[L]["b"])
        corr[L].update(fa, fb)
        if f[("a", L)].shape[0] >= 3:  # the null: B's codes 1.5 windows on, so neither tokens nor positions align
            # (a batch of 2 would wrap round to half a window back, partly the same window)
            null[L].update(fa, fb.roll(T1 + T1 // 2, dims=0))
match, null_max, live, dec = {}, {}, {}, {}
for L in p["layers"]:
    c, live_a, live_b = corr[L].result()
    c_null, null_live_a, null_live_b = null[L].result()
    live[L] = {"a": live_a, "b": live_b}
    match[L] = {"a": fd.best_match(c, live_b), "b": fd.best_match(c.T, live_a)}
    null_max[L] = {"a": fd.best_match(c_null, null_live_b)[1], "b": fd.best_match(c_null.T, null_live_a)[1]}
    w = {s: tensors.to_numpy(specs[L][s].module.W_dec) for s in "ab"}
    dec[L] = {"a": fd.decoder_cosine_match(w["a"], w["b"]), "b": fd.decoder_cosine_match(w["b"], w["a"])}
# pass 2, every layer at once: firing statistics given the matches
stats = {L: {s: fd.FiringStats(match[L][s][0], p["top_k"], device) for s in "ab"} for L in p["layers"]}
for off, f in code_batches(specs):
    for L in p["layers"]:
        fa, fb = f[("a", L)].reshape(-1, d[L]["a"]), f[("b", L)].reshape(-1, d[L]["b"])
        stats[L]["a"].update(fa, fb, off)
        stats[L]["b"].update(fb, fa, off)
for L in p["layers"]:
    layer_summary = {}
    for s, other in (("a", "b"), ("b", "a")):
        r = stats[L][s].result()
        q99 = float(np.quantile(null_max[L][s][live[L][s]], 0.99)) if live[L][s].any() else 0.0
        unmatched = live[L][s] & (match[L][s][1] < p["threshold"])
        tab = pd.DataFrame({"layer": L, "side": s.upper(), "preset": names[s], "other": names[other],
                            "latent": np.arange(d[L][s]), "live": live[L][s], "n_firing": r["n_firing"],
                            "max_corr": match[L][s][1], "match": match[L][s][0], "null_max_corr": null_max[L][s],
                            "decoder_cos": dec[L][s][1], "decoder_match": dec[L][s][0], "mean_act": r["mean_act"],
                            "mean_act_match": r["mean_act_match"], "asymmetry": r["asymmetry"],
                            "unmatched": unmatched})
        rows.append(tab)
        top = tab[tab["unmatched"]].sort_values(["asymmetry", "n_firing"], ascending=False).head(p["n_report"])
        layer_summary[s.upper()] = {
            "preset": names[s], "n_latents": d[L][s], "n_live": int(live[L][s].sum()), "n_unmatched": int(unmatched.sum()),
            "frac_unmatched": float(unmatched.sum() / max(1, live[L][s].sum())), "null_q99": q99,
            "frac_above_null_q99": float((match[L][s][1][live[L][s]] > q99).mean()) if live[L][s].any() else 0.0,
            "median_max_corr": float(np.median(match[L][s][1][live[L][s]])) if live[L][s].any() else 0.0,
            "unmatched_top": [
                {"latent": int(t.latent), "asymmetry": float(t.asymmetry), "max_corr": float(t.max_corr),
                 "match": int(t.match), "n_firing": int(t.n_firing),
                 "contexts": [context(int(ix) // T1, int(ix) % T1 + 1) for ix, v in
                              zip(r["top_tokens"][t.latent], r["top_values"][t.latent]) if ix >= 0 and np.isfinite(v)]}
                for t in top.itertuples()]}
    summary["layers"][str(L)] = layer_summary
table = pd.concat(rows, ignore_index=True)
tensors.require_finite({c: table[c] for c in ("max_corr", "null_max_corr", "decoder_cos", "mean_act", "asymmetry")},
                       "feature diff")
with store.write_artefact(out, node, device=device) as art:
    table.to_parquet(art.path("feature_diff.parquet"), index=False)
    store.write_json_atomic(art.path("feature_diff.json"), summary)
    from saeflow.report import eval_figures

    eval_figures.feature_diff_figure(table, summary, art.path(f"feature_diff__{names['a']}__{names['b']}__"
                                                              f"{node['labels']['dataset']}.png"),
                                     f"Feature diff of {p['dictionary']}: {names['a']} vs {names['b']} "
                                     f"({node['labels']['dataset']}, {summary['n_tokens']} tokens)")
    art.record(layers={L: {s: {k: v for k, v in x.items() if k != "unmatched_top"} for s, x in ls.items()}
                       for L, ls in summary["layers"].items()})
for L, ls in summary["layers"].items():
    for s, x in ls.items():
        print(L, s, {k: v for k, v in x.items() if k != "unmatched_top"})
