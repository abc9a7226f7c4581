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
    """Yield (offset, {side: codes [b, T1, d_sae]}) over the windows, one forward per model and batch."""
    streams = {s: activations.site_batches(models[s], tokens, [specs[s].hook_in], p["batch_size"]) for s in "ab"}
    for (i, xa), (_, xb) in zip(streams["a"], streams["b"]):
        with torch.no_grad():
            yield i * T1, {s: specs[s].codes(x[specs[s].hook_in].reshape(-1, x[specs[s].hook_in].shape[-1]))
                           .reshape(x[specs[s].hook_in].shape[0], T1, -1) for s, x in (("a", xa), ("b", xb))}


def context(window: int, pos: int, width: int = 10) -> str:
    tok = models["a"].tokenizer
    ids = tokens[window]
    left = tok.decode(ids[max(1, pos - width): pos].tolist())
    return f"{left}[[{tok.decode([int(ids[pos])])}]]"


rows, summary = [], {"presets": p["presets"], "dictionary": p["dictionary"], "threshold": p["threshold"],
                     "n_windows": len(tokens), "n_tokens": len(tokens) * T1, "layers": {}}
for L in p["layers"]:
    specs = {s: locality.load_layer_dicts({L: inputs[f"dict_{s}_L{L}"]}, device)[L] for s in "ab"}
    d = {s: int(specs[s].module.W_dec.shape[0]) for s in "ab"}
    corr, null = fd.CodeCorrelation(d["a"], d["b"], device), fd.CodeCorrelation(d["a"], d["b"], device)
    for _, f in code_batches(specs):
        corr.update(f["a"].reshape(-1, d["a"]), f["b"].reshape(-1, d["b"]))
        if f["a"].shape[0] >= 3:  # the null: B's codes 1.5 windows on, so neither tokens nor positions align
            # (a batch of 2 would wrap round to half a window back, partly the same window)
            null.update(f["a"].reshape(-1, d["a"]), f["b"].reshape(-1, d["b"]).roll(T1 + T1 // 2, dims=0))
    c, live_a, live_b = corr.result()
    c_null, null_live_a, null_live_b = null.result()
    live = {"a": live_a, "b": live_b}
    match = {"a": fd.best_match(c, live_b), "b": fd.best_match(c.T, live_a)}
    null_max = {"a": fd.best_match(c_null, null_live_b)[1], "b": fd.best_match(c_null.T, null_live_a)[1]}
    w = {s: tensors.to_numpy(specs[s].module.W_dec) for s in "ab"}
    dec = {"a": fd.decoder_cosine_match(w["a"], w["b"]), "b": fd.decoder_cosine_match(w["b"], w["a"])}
    stats = {s: fd.FiringStats(match[s][0], p["top_k"], device) for s in "ab"}
    for off, f in code_batches(specs):
        fa, fb = f["a"].reshape(-1, d["a"]), f["b"].reshape(-1, d["b"])
        stats["a"].update(fa, fb, off)
        stats["b"].update(fb, fa, off)
    layer_summary = {}
    for s, other in (("a", "b"), ("b", "a")):
        r = stats[s].result()
        q99 = float(np.quantile(null_max[s][live[s]], 0.99)) if live[s].any() else 0.0
        unmatched = live[s] & (match[s][1] < p["threshold"])
        tab = pd.DataFrame({"layer": L, "side": s.upper(), "preset": names[s], "other": names[other],
                            "latent": np.arange(d[s]), "live": live[s], "n_firing": r["n_firing"],
                            "max_corr": match[s][1], "match": match[s][0], "null_max_corr": null_max[s],
                            "decoder_cos": dec[s][1], "decoder_match": dec[s][0], "mean_act": r["mean_act"],
                            "mean_act_match": r["mean_act_match"], "asymmetry": r["asymmetry"],
                            "unmatched": unmatched})
        rows.append(tab)
        top = tab[tab["unmatched"]].sort_values(["asymmetry", "n_firing"], ascending=False).head(p["n_report"])
        layer_summary[s.upper()] = {
            "preset": names[s], "n_latents": d[s], "n_live": int(live[s].sum()), "n_unmatched": int(unmatched.sum()),
            "frac_unmatched": float(unmatched.sum() / max(1, live[s].sum())), "null_q99": q99,
            "frac_above_null_q99": float((match[s][1][live[s]] > q99).mean()) if live[s].any() else 0.0,
            "median_max_corr": float(np.median(match[s][1][live[s]])) if live[s].any() else 0.0,
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
