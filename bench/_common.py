"""Shared set-up of the benchmarks: an embedded-size model and tokens (random weights: speed only)."""
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("SPARSIFY_DISABLE_TRITON", "1")


def model_and_tokens(n_layers=4, d_model=128, vocab=1024, ctx=64, n_windows=512, seed=0):
    import torch
    from transformer_lens import HookedTransformer

    from saeflow.models.lm import make_config

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    torch.manual_seed(seed)
    arch = {"n_layers": n_layers, "d_model": d_model, "n_heads": 4, "d_mlp": 4 * d_model, "act_fn": "gelu",
            "n_ctx": ctx}
    model = HookedTransformer(make_config(arch, vocab)).eval()
    tokens = torch.randint(0, vocab, (n_windows, ctx), generator=torch.Generator().manual_seed(seed))
    return model, tokens


def write_result(name: str, result: dict) -> None:
    out = ROOT / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
