"""Rule top_contexts: top-activating events per latent (at most one per window) from the cached activations,
each with its window's text and the latent's activation at every token, and every latent's firing statistics.

Per layer: `top_contexts_layer<L>.parquet` (feature_id, event_idx, window_idx, pos, activation, start, context,
peak_token_text, peak_index, tokens, token_strs, acts, layer, dictionary: the context is the window after BOS, or
`context_tokens` of it around the peak, from index `start`) and `latent_stats_layer<L>.parquet`
(feature_id, n_fired, density, max_activation, mean_activation, hist). Two passes over the cache: events and
statistics, then the events' windows and the histograms (saeflow.evals.contexts)."""
import numpy as np
import torch
from safetensors.numpy import load_file

from saeflow.data import activations, tokenizer
from saeflow.evals import contexts, locality
from saeflow.workflow import jobs, store

node, inputs, out = jobs.start(snakemake)  # noqa: F821
p = node["params"]
device = jobs.device_of(node)
P = p["positions_per_window"]
dicts = locality.load_layer_dicts({L: inputs[f"dict_L{L}"] for L in p["layers"]}, device)
tok = tokenizer.load_tokenizer(inputs["tokenizer"] / "tokenizer")
tokens = load_file(str(inputs["windows"] / "windows.safetensors"))["train_tokens"]


# The second pass reads the first pass's codes back from a sparse copy (codes are sparse: k or L0 of d_sae per
# token) while they fit in this many bytes, instead of encoding the cache again.
SPARSE_BUDGET_BYTES = 1 << 30


def codes(spec, scan_add=None, keep=None):
    """Dense codes of the cached site, block by block (whole windows), on the CPU; ``keep``: a list that receives a
    sparse copy of each block (emptied, with None appended, once the copies pass SPARSE_BUDGET_BYTES)."""
    size = 0
    for x in activations.iter_window_blocks(inputs["cache"], spec.hook_in, P):
        with torch.no_grad():
            f = spec.codes(x.to(device)).cpu()
        if scan_add is not None:
            scan_add(f)
        if keep is not None and (not keep or keep[-1] is not None):
            sparse = f.to_sparse()
            size += sparse.values().numel() * (f.element_size() + 16)
            if size <= SPARSE_BUDGET_BYTES:
                keep.append(sparse)
            else:
                keep[:] = [None]
        yield f


def again(spec, kept):
    """The first pass's codes once more: densified from their sparse copies, or encoded again."""
    if kept and kept[-1] is not None:
        return (s.to_dense() for s in kept)
    return codes(spec)


with store.write_artefact(out, node, device=device) as art:
    counts = {}
    for L, spec in dicts.items():
        scan = contexts.LatentScan(p["n_bins"])
        kept: list = []
        events = locality.top_events(codes(spec, scan.add, kept), P, p["k"], p["min_pos"])
        acts = contexts.window_activations(again(spec, kept), P, events["window_idx"], events["feature_id"],
                                           on_block=scan.add_histogram)
        del kept
        if len(events) and not np.allclose(acts[np.arange(len(events)), events["pos"] - 1], events["activation"],
                                           rtol=1e-5, atol=1e-6):
            raise RuntimeError(f"layer {L}: the second pass over the cache does not reproduce the events' activations")
        # each event's context: the window after BOS, or a span of it around the peak (inspect.context_tokens)
        spans = np.array([contexts.peak_span(q - 1, P, p["context_tokens"] or P) for q in events["pos"]],
                         dtype=np.int64).reshape(-1, 2)
        cols = spans[:, :1] + np.arange(spans[0, 1] - spans[0, 0] if len(spans) else P)
        rows = np.arange(len(events))[:, None]
        ids = tokens[events["window_idx"].to_numpy()][:, 1:][rows, cols]
        events = contexts.with_text(events.assign(start=spans[:, 0]), ids, acts[rows, cols], tok,
                                    events["pos"].to_numpy() - 1 - spans[:, 0])
        events = events.assign(**jobs.coordinates(node, layer=L))
        events.to_parquet(art.path(f"top_contexts_layer{L}.parquet"), index=False)
        stats = scan.table().assign(**jobs.coordinates(node, layer=L))
        stats.to_parquet(art.path(f"latent_stats_layer{L}.parquet"), index=False)
        counts[L] = {"n_events": len(events), "n_latents": int(events["feature_id"].nunique()),
                     "n_live": int((stats["n_fired"] > 0).sum()), "n_tokens": int(scan.n_tokens)}
    art.record(counts=counts)
print(counts)
