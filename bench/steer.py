"""Steered generation: generated tokens per second, side by side in one process, same model and prompts.

- hook overhead: ``steering.generate`` with the steering hook (alpha != 0) vs the same call with no hook
  (goal: overhead <= 5%);
- batching: ``steering.generate`` over all prompts in batches vs one prompt at a time;
- for scale: TransformerLens' own ``HookedTransformer.generate`` (key-value cache, greedy) on the same
  prompts, the reference a cache-free loop gives up: saeflow's loop runs one full forward per new token so
  the hook sees absolute positions, so it costs O(T^2) where the cached one costs O(T).

Embedded-size model (4 layers, d_model 128, vocab 1024, random weights), prompts of 16 tokens, 16 new
tokens, greedy. Medians over `--reps` runs, order alternated. Writes bench/results/steer.json.

    python bench/steer.py [--device cpu] [--prompts 64] [--reps 5]
"""
import argparse
import statistics
import time

from _common import model_and_tokens, write_result


def main(device="cpu", n_prompts=64, prompt_len=16, new=16, reps=5, batch_size=64):
    import numpy as np
    import torch

    from saeflow.evals import steering
    from saeflow.tensors import to_numpy

    model, tokens = model_and_tokens(n_windows=n_prompts, ctx=2 * (prompt_len + new))  # room for TL generate
    model = model.to(device)
    prompts = to_numpy(tokens[:, :prompt_len])
    v = steering.random_vector(model.cfg.d_model, 0, device)
    hook = ("blocks.2.hook_resid_post", v, 4.0, 0)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def timed(fn):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    runs = {
        "bare": lambda: steering.generate(model, prompts, new, greedy=True, batch_size=batch_size),
        "steered": lambda: steering.generate(model, prompts, new, greedy=True, batch_size=batch_size, steer=hook),
        "one_at_a_time": lambda: steering.generate(model, prompts, new, greedy=True, batch_size=1, steer=hook),
        "tl_generate_kv_cache": lambda: model.generate(torch.as_tensor(prompts, device=device), max_new_tokens=new,
                                                       do_sample=False, verbose=False, use_past_kv_cache=True,
                                                       stop_at_eos=False),
    }
    for fn in runs.values():  # warm-up
        fn()
    times = {k: [] for k in runs}
    for r in range(reps):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            times[k].append(timed(runs[k]))
    med = {k: statistics.median(t) for k, t in times.items()}
    tokens_out = n_prompts * new
    # Greedy continuations: saeflow's loop vs TL's generate without and with its key-value cache.
    bare = runs["bare"]()
    no_cache = model.generate(torch.as_tensor(prompts, device=device), max_new_tokens=new, do_sample=False,
                              verbose=False, use_past_kv_cache=False, stop_at_eos=False)[:, prompt_len:]
    cached = runs["tl_generate_kv_cache"]()[:, prompt_len:]
    same = bool(np.array_equal(bare, to_numpy(no_cache)))
    agree_cached = float((bare == to_numpy(cached)).mean())
    write_result("steer" if device == "cpu" else f"steer_{device}", {
        "device": device, "threads": torch.get_num_threads(), "n_prompts": n_prompts, "prompt_len": prompt_len,
        "new_tokens": new, "batch_size": batch_size, "reps": reps,
        "seconds_median": med, "tokens_per_s": {k: tokens_out / s for k, s in med.items()},
        "hook_overhead": med["steered"] / med["bare"] - 1, "goal_hook_overhead": 0.05,
        "batched_speedup_vs_one_at_a_time": med["one_at_a_time"] / med["steered"],
        "tl_kv_cache_speedup_vs_bare": med["bare"] / med["tl_generate_kv_cache"],
        "bare_equals_tl_generate_no_cache_greedy": same,
        "token_agreement_with_tl_generate_kv_cache": agree_cached,
    })


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    main(a.device, a.prompts, reps=a.reps)
