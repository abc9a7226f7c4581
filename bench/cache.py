"""Activation caching throughput vs a bare forward pass over the same tokens, in one process.

Reference: `model(tokens, stop_at_layer=L+1)` in batches under no_grad (the least any cache must do).
New: `saeflow.data.activations.cache_activations` (same batches, same stop layer) capturing every site of
the embedded preset (resid_post at layers 1 and 3, MLP in/out for the transcoder) and writing float16
safetensors shards. Repeats alternate the two; the median of each is reported.
Goal: overhead <= 15%. Writes bench/results/cache.json.
"""
import statistics
import tempfile
import time

from _common import model_and_tokens, write_result


def main(repeats=5, batch_size=32):
    import torch

    from saeflow.data.activations import cache_activations
    from saeflow.tensors import to_numpy
    from saeflow.workflow.plan import hook_name

    model, tokens = model_and_tokens()
    layers = [1, 3]
    sites = sorted({hook_name(s, L) for L in layers for s in ("resid_post", "mlp_in", "mlp_out")})
    stop = max(layers) + 1
    n_tok = tokens.numel()

    def bare():
        with torch.no_grad():
            for i in range(0, len(tokens), batch_size):
                model(tokens[i: i + batch_size], stop_at_layer=stop)

    def cached():
        with tempfile.TemporaryDirectory() as d:
            cache_activations(model, to_numpy(tokens), sites, d, dtype="float16", shard_tokens=65536,
                              batch_size=batch_size, progress=False)

    bare(), cached()  # warm-up
    t_bare, t_cache = [], []
    for _ in range(repeats):
        for fn, acc in ((bare, t_bare), (cached, t_cache)):
            t0 = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - t0)
    b, c = statistics.median(t_bare), statistics.median(t_cache)
    write_result("cache", {
        "tokens": n_tok, "sites": sites, "bare_forward_s": round(b, 4), "cache_s": round(c, 4),
        "bare_tokens_per_s": round(n_tok / b), "cache_tokens_per_s": round(n_tok / c),
        "overhead_ratio": round(c / b, 4), "overhead_pct": round(100 * (c / b - 1), 2), "goal_pct": 15,
        "meets_goal": c / b <= 1.15, "repeats": repeats, "threads": torch.get_num_threads(),
    })


if __name__ == "__main__":
    main()
