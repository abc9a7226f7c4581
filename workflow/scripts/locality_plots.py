"""Rule locality_plots: every figure of one (preset, dataset)'s locality analyses (no computation)."""
import pandas as pd

from saeflow.report import entropy_figures, h_pos_figures
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
ent = store.read_manifest(inputs["entropy"])
site, layers = ent["params"]["site"], ent["params"]["layers"]
lab = node["labels"]
ctx_len = node["params"]["ctx_len"]
features, windows = [], []
for L in layers:
    stem = inputs["entropy"] / f"entropy_comparison_{site}_layer{L}"
    features.append(pd.read_parquet(f"{stem}.parquet").assign(layer=L))
    windows.append(pd.read_parquet(f"{stem}_windows.parquet").assign(layer=L))
features, windows = pd.concat(features, ignore_index=True), pd.concat(windows, ignore_index=True)
hp = store.read_manifest(inputs["h_pos"])
with store.write_artefact(out, node) as art:
    entropy_figures.entropy_depth_figure(features, windows, ctx_len, f"{lab['preset']} / {lab['dataset']} ({site}, "
                              f"dictionary {lab['dictionary']})",
                              art.path(f"entropy_vs_depth__{lab['preset']}__{lab['dataset']}.png"))
    for L in layers:
        d = art.path(f"entropy_plots_{site}_layer{L}/x").parent
        entropy_figures.layer_entropy_plots(features[features.layer == L], windows[windows.layer == L], L, d)
    entropy_figures.ctxlen_sweep_figure(pd.read_parquet(inputs["sweep"] / "entropy_vs_context_len.parquet"),
                             pd.read_parquet(inputs["sweep"] / "token_vector_vs_context_len.parquet"),
                             art.path("entropy_vs_context_len.png"),
                             f"Context-length sweep: {lab['preset']} / {lab['dataset']}")
    truth = store.read_json(inputs["h_pos"] / "ground_truth.json") if (inputs["h_pos"] / "ground_truth.json").is_file() else {}
    for L in layers:
        by_ctx = []
        for N in hp["params"]["ctx_lens"]:
            rows = pd.read_parquet(inputs["h_pos"] / f"layer{L}/ctx{N}.parquet")
            h_pos_figures.h_pos_overview(rows, N, art.path(f"h_pos_layer{L}/h_pos_overview_ctx{N}.png"))
            by_ctx.append(rows.assign(ctx=N))
        h_pos_figures.h_pos_vs_ctxlen(pd.concat(by_ctx, ignore_index=True), art.path(f"h_pos_layer{L}/h_pos_vs_ctxlen.png"))
        N = max(hp["params"]["ctx_lens"])
        if f"layer{L}_ctx{N}" in truth:
            t = truth[f"layer{L}_ctx{N}"]
            h_pos_figures.ground_truth_figure(pd.DataFrame(t["per_latent"]), art.path(f"h_pos_layer{L}/ground_truth_ctx{N}.png"),
                                     {k: v for k, v in t.items() if k != "per_latent"})
