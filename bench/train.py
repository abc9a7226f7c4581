"""Dictionary training tokens/s through saeflow vs the library's loop called directly, same shards.

Both train a sparsify TopK SAE (d_in 128, 1024 latents, k 32, batch 1024) on the same cached float16
shards for the same number of steps, in one process:
- reference: a plain loop written against sparsify's API: all shards loaded up front, one random
  permutation, then per step `SparseCoder.forward(x, dead_mask=...)`, fvu + auxk loss, backward,
  `remove_gradient_parallel_to_decoder_directions`, Adam step, `set_decoder_norm_to_unit_norm`;
- saeflow: `activations.batch_stream` (streams shards) + `training.train_dictionary`, which also
  logs the curve and runs the sae-lens conversion and its encode-fidelity check once at the end
  (that one-off cost is timed separately and excluded from tokens/s, and reported).
Goal: overhead <= 5%. Writes bench/results/train.json.
"""
import statistics
import tempfile
import time
from pathlib import Path

from _common import model_and_tokens, write_result

D_SAE, K, BATCH, STEPS = 1024, 32, 1024, 150


def reference_loop(cache_dir: Path, site: str, seed: int) -> float:
    import torch
    from safetensors.torch import load_file
    from sparsify import SparseCoder, SparseCoderConfig

    from saeflow.data.activations import read_index

    x = torch.cat([load_file(str(cache_dir / site / s["file"]))["x"].float() for s in read_index(cache_dir, site)])
    torch.manual_seed(seed)
    coder = SparseCoder(x.shape[1], SparseCoderConfig(num_latents=D_SAE, k=K), device="cpu", dtype=torch.float32)
    opt = torch.optim.Adam(coder.parameters(), lr=2e-4 / (D_SAE / 2**14) ** 0.5, eps=1e-15)
    last_fired = torch.zeros(D_SAE, dtype=torch.long)
    t0 = time.perf_counter()
    perm = torch.randperm(x.shape[0])
    for step in range(STEPS):
        idx = perm[(step * BATCH) % (len(perm) - BATCH):][:BATCH]
        xb = x[idx]
        out = coder(xb, dead_mask=last_fired > STEPS * BATCH // 10)  # saeflow default: n_tokens // 10
        loss = out.fvu + out.auxk_loss / 32
        loss.backward()
        coder.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        coder.set_decoder_norm_to_unit_norm()
        last_fired += BATCH
        last_fired[out.latent_indices.flatten()] = 0
    return time.perf_counter() - t0


def saeflow_loop(cache_dir: Path, site: str, seed: int, out_dir: Path) -> tuple[float, float]:
    """(training-loop seconds, total seconds incl. save + conversion + fidelity check)."""
    from saeflow.data import activations
    from saeflow.dictionaries import training

    stream = activations.batch_stream(cache_dir, site, None, BATCH, seed)
    t0 = time.perf_counter()
    res = training.train_dictionary("sparsify-topk", stream, d_in=128, d_sae=D_SAE, k=K, n_tokens=STEPS * BATCH,
                                      batch_size=BATCH, lr=None, seed=seed, out_dir=out_dir, hook_name=site,
                                      progress=False)
    return res.train_s, time.perf_counter() - t0


def main(repeats=3):
    import torch

    from saeflow.data.activations import cache_activations
    from saeflow.tensors import to_numpy

    model, tokens = model_and_tokens(n_windows=2560)
    site = "blocks.1.hook_resid_post"
    t_ref, t_new, t_total = [], [], []
    with tempfile.TemporaryDirectory() as d:
        cache_dir = Path(d) / "cache"
        cache_activations(model, to_numpy(tokens), [site], cache_dir, shard_tokens=32768, progress=False)
        for r in range(repeats):
            t_ref.append(reference_loop(cache_dir, site, r))
            loop_s, total_s = saeflow_loop(cache_dir, site, r, Path(d) / f"run{r}")
            t_new.append(loop_s)
            t_total.append(total_s)
    ref, new, total = statistics.median(t_ref), statistics.median(t_new), statistics.median(t_total)
    n_tok = STEPS * BATCH
    write_result("train", {
        "kind": "sparsify-topk", "d_sae": D_SAE, "k": K, "batch": BATCH, "steps": STEPS,
        "reference_tokens_per_s": round(n_tok / ref), "saeflow_tokens_per_s": round(n_tok / new),
        "reference_s": round(ref, 3), "saeflow_train_loop_s": round(new, 3),
        "saeflow_total_s_incl_save_conversion_fidelity": round(total, 3),
        "overhead_ratio": round(new / ref, 4), "overhead_pct": round(100 * (new / ref - 1), 2), "goal_pct": 5,
        "meets_goal": new / ref <= 1.05, "repeats": repeats, "threads": torch.get_num_threads(),
    })


if __name__ == "__main__":
    main()
