"""Feature influence: batched ``window_influence`` vs the seed's per-latent reference, same run.

Same random-init model, TopK SAEs (sae-lens ``TopKSAE``, random weights, b_dec != 0, threshold 0), windows
and latents for both; token_vector=True for both. Reports seconds per window of each, the speedup (mean
reference / mean batched over the windows both ran) and max over windows of max|J_b - J_r| / max|J_r|
(also H, R and H_token differences). Shapes: "default" (6 layers, d_model 256, d_mlp 1024, 8 heads,
vocab 2048, SAEs d_sae 4096, k 96 at resid_post 1, 3, 5) or "pythia-70m" (6 layers, d_model 512, 8 heads,
d_mlp 2048, vocab 50304, n_ctx 2048), windows of 64 tokens. Goal: batched >= 20x faster.

On a CPU it runs once per thread count (default: 1 and every core) and puts the speedup next to what the
arithmetic allows: the matrix-product FLOPs of each method per window (``torch.utils.flop_counter``) and
the machine's peak matrix-product rate, measured in the same process (best of square float32 matmuls).
``bound_s_per_window`` = batched FLOPs / peak rate is the time of the batched method's matrix products
alone at peak; ``max_speedup_at_peak`` = reference seconds / that bound. The batched method's products are
the d_site reverse-mode rows per layer that the token vector R needs (the site Jacobian G); J for every
latent then costs one [F, d_site] x [d_site, T d_model] product.

    python bench/influence.py [--device cuda] [--shape pythia-70m] [--windows 3] [--ref-windows 2]
                              [--threads 1,2]

Writes bench/results/influence.json (default shape on CPU) or influence_<device>_<shape>.json.
"""
import argparse
import os
import statistics
import time

from _common import write_result

SHAPES = {
    "default": dict(n_layers=6, d_model=256, n_heads=8, d_mlp=1024, act_fn="gelu", n_ctx=64, vocab=2048),
    "pythia-70m": dict(n_layers=6, d_model=512, n_heads=8, d_mlp=2048, act_fn="gelu", n_ctx=2048, vocab=50304),
}


def gemm_peak_gflops(device, sizes=(1024, 2048, 4096), reps=3) -> float:
    """Best float32 matmul rate over square sizes (GFLOP/s), this process, current thread count."""
    import torch

    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        a @ b  # warm-up
        for _ in range(reps):
            _sync(device)
            t0 = time.perf_counter()
            a @ b
            _sync(device)
            best = max(best, 2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return best


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def matmul_gflop(fn) -> float:
    """FLOPs of fn()'s matrix products (mm, addmm, bmm, ...), counted at dispatch, in GFLOP."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    return counter.get_total_flops() / 1e9


def main(device="cpu", shape="default", windows=3, ref_windows=None, threads=None, T=64, layers=(1, 3, 5),
         d_sae=4096, k=96, budget_mb=512.0, seed=0):
    import numpy as np
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from transformer_lens import HookedTransformer

    from saeflow.evals.influence import (
        DictSpec,
        chunk_rows,
        vjp_row_bytes,
        window_influence,
        window_influence_reference,
    )
    from saeflow.models.lm import make_config
    from saeflow.workflow.plan import hook_name

    on_cpu = device == "cpu"
    threads = (threads or sorted({1, os.cpu_count() or 1})) if on_cpu else [torch.get_num_threads()]
    ref_windows = windows if ref_windows is None else min(ref_windows, windows)
    s = SHAPES[shape]
    arch = {key: v for key, v in s.items() if key != "vocab"}
    torch.manual_seed(seed)
    model = HookedTransformer(make_config(arch, s["vocab"], device)).eval()
    dicts = {}
    for L in layers:
        sae = TopKSAE(TopKSAEConfig(d_in=s["d_model"], d_sae=d_sae, k=k, apply_b_dec_to_input=True,
                                    rescale_acts_by_decoder_norm=False, dtype="float32", device=device))
        with torch.no_grad():
            sae.b_dec.normal_(0, 0.1)
        dicts[L] = DictSpec(sae.eval(), hook_name("resid_post", L))
    g = torch.Generator().manual_seed(seed)
    toks = torch.randint(0, s["vocab"], (windows, T), generator=g).to(device)

    def batched(w):
        return window_influence(model, toks[w], dicts, 0.0, token_vector=True, memory_budget_mb=budget_mb)

    def reference(w):
        return window_influence_reference(model, toks[w], dicts, 0.0, token_vector=True)

    def timed(fn, w):
        _sync(device)
        t0 = time.perf_counter()
        res = fn(w)
        _sync(device)
        return res, time.perf_counter() - t0

    gflop = {"batched": matmul_gflop(lambda: batched(0)), "reference": matmul_gflop(lambda: reference(0))}
    runs, diffs, n_active, methods = [], None, [], set()
    for n_threads in threads:
        if on_cpu:
            torch.set_num_threads(n_threads)
        warm = toks[0, :8]
        window_influence(model, warm, dicts, 0.0), window_influence_reference(model, warm, dicts, 0.0)
        peak = gemm_peak_gflops(device)
        t_b, t_r, rel_J, dH, rel_R, dHt = [], [], [], [], [], []
        for w in range(windows):
            b, tb = timed(batched, w)
            t_b.append(tb)
            if diffs is None:
                n_active.append({L: int(len(b[L].latents)) for L in layers})
                methods |= {b[L].method for L in layers}
            if w >= ref_windows:
                continue
            r, tr = timed(reference, w)
            t_r.append(tr)
            for L in layers:
                assert np.array_equal(b[L].latents, r[L].latents), "batched and reference latent sets differ"
                rel_J.append(float(np.abs(b[L].J - r[L].J).max() / np.abs(r[L].J).max()))
                dH.append(float(np.abs(b[L].H - r[L].H).max()))
                rel_R.append(float(np.abs(b[L].R - r[L].R).max() / np.abs(r[L].R).max()))
                dHt.append(abs(b[L].H_token - r[L].H_token))
            print(f"threads {n_threads}, window {w}: batched {tb:.2f} s, reference {tr:.2f} s", flush=True)
        if diffs is None:
            diffs = {"max_rel_diff_J": max(rel_J), "max_abs_diff_H": max(dH), "max_rel_diff_R": max(rel_R),
                     "max_abs_diff_H_token": max(dHt)}
        mean_b, mean_r = statistics.mean(t_b[:ref_windows]), statistics.mean(t_r)
        bound = gflop["batched"] / peak
        runs.append({
            "threads": torch.get_num_threads() if on_cpu else None,
            "batched_s_per_window": [round(t, 3) for t in t_b],
            "reference_s_per_window": [round(t, 3) for t in t_r],
            "batched_mean_s": round(mean_b, 3), "reference_mean_s": round(mean_r, 3),
            "speedup": round(mean_r / mean_b, 2),
            "gemm_peak_gflops": round(peak, 1),
            "batched_achieved_gflops": round(gflop["batched"] / mean_b, 1),
            "reference_achieved_gflops": round(gflop["reference"] / mean_r, 1),
            "bound_s_per_window": round(bound, 3), "max_speedup_at_peak": round(mean_r / bound, 2),
        })

    best = max(runs, key=lambda r: r["speedup"])
    d = s["d_model"]
    # backward rows per window: the reference runs F + d_site single-row backward passes per layer, the
    # batched method d_site rows (in chunks)
    rows_ref = [sum(n[L] + d for L in layers) for n in n_active[:ref_windows]]
    name = "influence" if (device, shape) == ("cpu", "default") else f"influence_{device}_{shape}"
    write_result(name, {
        "device": device if on_cpu else torch.cuda.get_device_name(), "torch": torch.__version__,
        "shape": shape, "model": s, "window_tokens": T,
        "dictionary": {"kind": "sae-lens TopKSAE (random)", "d_sae": d_sae, "k": k, "site": "resid_post",
                       "layers": list(layers), "threshold": 0.0},
        "token_vector": True, "memory_budget_mb": budget_mb,
        "chunk_rows": chunk_rows(budget_mb, vjp_row_bytes(model.cfg, T), device), "methods": sorted(methods),
        "windows_batched": windows, "windows_reference": ref_windows,
        "reference_note": None if ref_windows == windows else
        f"reference timed on the first {ref_windows} windows only (slow); speedup uses those windows",
        "n_active_latents": n_active,
        "backward_rows_reference_per_window": rows_ref, "backward_rows_batched_per_window": d * len(layers),
        "matmul_gflop_per_window": {k_: round(v, 1) for k_, v in gflop.items()},
        **diffs,
        "runs": runs,
        "speedup": best["speedup"], "speedup_threads": best["threads"],
        "goal_speedup": 20, "meets_goal": best["speedup"] >= 20,
        "goal_within_peak_bound": max(r["max_speedup_at_peak"] for r in runs) >= 20,
    })


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", default="default", choices=sorted(SHAPES))
    p.add_argument("--windows", type=int, default=3)
    p.add_argument("--ref-windows", type=int, default=None, help="time the reference on the first N windows")
    p.add_argument("--threads", default=None, help="CPU thread counts, comma-separated (default: 1 and all cores)")
    p.add_argument("--budget-mb", type=float, default=512.0)
    a = p.parse_args()
    main(device=a.device, shape=a.shape, windows=a.windows, ref_windows=a.ref_windows, budget_mb=a.budget_mb,
         threads=[int(t) for t in a.threads.split(",")] if a.threads else None)
