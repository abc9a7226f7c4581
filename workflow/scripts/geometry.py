"""Rule geometry: decoder cosine vs |H_a - H_b| (H = mean H_pos at the longest context) per layer, with a
seeded permutation null; the seed card's feature_geometry_vs_entropy files, per layer."""
import numpy as np

from saeflow.evals import geometry, locality
from saeflow.tensors import to_numpy
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
dicts = locality.load_layer_dicts({L: inputs[f"dict_L{L}"] for L in p["layers"]})
with store.write_artefact(out, node) as art:
    summaries = {}
    for L, spec in dicts.items():
        ctx, H = locality.mean_h_pos(inputs["h_pos"], L)
        W_dec = to_numpy(spec.module.W_dec, np.float32)
        per_feature, pairwise, summary = geometry.geometry_vs_entropy(W_dec, H.index.to_numpy(), H.to_numpy(),
                                                                      p["n_permutations"], p["seed"])
        per_feature.to_csv(art.path(f"layer{L}/per_feature.csv"), index=False)
        pairwise.assign(**jobs.coordinates(node, layer=L)).to_parquet(art.path(f"layer{L}/pairwise.parquet"), index=False)
        summary = {**node["labels"], "layer": L, "h_pos_ctx": ctx, **summary}
        store.write_json_atomic(art.path(f"layer{L}/manifest.json"), summary)
        summaries[L] = {k: summary[k] for k in ("n_features", "n_pairs", "correlation_decoder_cos_vs_abs_dH_pos")}
    art.record(summary=summaries)
print(summaries)
