"""Rule eval_plots: the figures of probing, circuits, steering, head-to-head comparisons, autocorrelation, geometry
and auto-interp of one (preset, dataset)."""
import pandas as pd

from saeflow.report import eval_figures
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
lab = node["labels"]
where = f"{lab['preset']} / {lab['dataset']}"
with store.write_artefact(out, node) as art:
    if "probe" in inputs:
        df = pd.read_parquet(inputs["probe"] / "probe.parquet")
        # One curve per (layer, dictionary): the task column carries it, so the legend says which.
        df = df.assign(task=df["task"] + ", L" + df["layer"].astype(str) + " " + df["dictionary"])
        eval_figures.probe_figure(df, art.path(f"probe__{lab['preset']}__{lab['dataset']}.png"),
                           f"Sparse probing, SAE latents vs residual baseline: {where}")
    if "steer" in inputs:
        s = store.read_json(inputs["steer"] / "summary.json")
        eval_figures.steering_figure(pd.read_parquet(inputs["steer"] / "steering.parquet"), s,
                                     art.path(f"steer__{lab['preset']}__{lab['dataset']}.png"),
                                     f"Steering at layer {s['layer']} with {s['dictionary']}: {where}")
    if "circuit" in inputs:
        c = inputs["circuit"]
        eval_figures.circuit_figure(pd.read_parquet(c / "circuit.parquet"), pd.read_parquet(c / "ablation.parquet"),
                                    art.path(f"circuit__{lab['preset']}__{lab['dataset']}.png"),
                                    f"Sparse feature circuits of {store.read_json(c / 'summary.json')['dictionary']}: "
                                    f"{where}")
    for role, what in (("compare", "Head-to-head"), ("control", "Trained model (A) vs its randomized control (B)")):
        if role in inputs:
            conf = store.read_json(inputs[role] / "summary.json")["confidence"]
            eval_figures.compare_figure(pd.read_parquet(inputs[role] / "compare.parquet"),
                                        art.path(f"{role}__{lab['preset']}__{lab['dataset']}.png"),
                                        f"{what}, A - B with {conf:.0%} bootstrap CIs: {where}")
    if "autocorr" in inputs:
        m = store.read_manifest(inputs["autocorr"])
        for i, L in enumerate(m["params"]["layers"]):
            d = inputs["autocorr"] / f"layer{L}"
            curves = pd.read_csv(d / "autocorr_curves.csv")
            rho = curves.pivot(index="feature_id", columns="lag", values="rho")
            name = f"autocorr__{lab['preset']}__{lab['dataset']}.png" if i == len(m["params"]["layers"]) - 1 \
                else f"autocorr_layer{L}.png"
            eval_figures.autocorr_figure(rho.to_numpy(), list(range(len(rho))), art.path(name),
                                     f"Activation autocorrelation, layer {L}: {where}")
            eval_figures.autocorr_vs_entropy_figure(pd.read_csv(d / "feature_summary.csv"),
                                                art.path(f"autocorr_vs_h_pos_layer{L}.png"),
                                                f"Autocorrelation length vs H_pos, layer {L}: {where}")
    if "geometry" in inputs:
        m = store.read_manifest(inputs["geometry"])
        for i, L in enumerate(m["params"]["layers"]):
            d = inputs["geometry"] / f"layer{L}"
            name = f"geometry__{lab['preset']}__{lab['dataset']}.png" if i == len(m["params"]["layers"]) - 1 \
                else f"geometry_layer{L}.png"
            eval_figures.geometry_figure(pd.read_parquet(d / "pairwise.parquet"), store.read_json(d / "manifest.json"),
                                     art.path(name), f"Decoder cosine vs |dH_pos|, layer {L}: {where}")
    scored = sorted(r for r in inputs if r.startswith("autointerp__"))
    if scored:
        rows = []
        for role in scored:
            s = store.read_json(inputs[role] / "summary.json")
            rows += [{**r, "dictionary": s["coordinates"]["dictionary"], "layer": s["coordinates"]["layer"]}
                     for r in s["summary"] if r["group"] == "all"]
        eval_figures.autointerp_figure(pd.DataFrame(rows), art.path(f"autointerp__{lab['preset']}__{lab['dataset']}.png"),
                                       f"Auto-interp, accuracy over latents with {int(100 * s['confidence'])}% "
                                       f"bootstrap CIs: {where}")
    tasks = sorted(r for r in inputs if r.startswith("saebench__"))
    if tasks:
        means = []
        for role in tasks:
            t = pd.read_parquet(inputs[role] / "saebench.parquet")
            g = t.groupby(["task", "layer", "dictionary", "k", "representation"], sort=True)
            m = g["accuracy"].mean().unstack("representation").reset_index()
            # Wilson intervals over every class's test items (the mean of the classes' accuracies)
            n = g["n_test"].sum().unstack("representation")["sae"].to_numpy()
            means.append(m.assign(n_test=n, acc_sae=m["sae"], acc_raw=m["raw"]))
        eval_figures.saebench_figure(pd.concat(means, ignore_index=True),
                                     art.path(f"saebench__{lab['preset']}__{lab['dataset']}.png"),
                                     f"SAEBench sparse probing, mean over classes: {where}")
