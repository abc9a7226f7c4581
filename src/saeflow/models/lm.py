"""The embedded language model: a small TransformerLens `HookedTransformer` trained on CPU.

Saved as `model.safetensors` + `config.json` (the HookedTransformerConfig fields we set) next to the
tokenizer directory; `load_model` rebuilds it with the saved tokenizer so TransformerLens' tokenizer
checks pass (it rejects tokenizers built in memory).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

ARCH_KEYS = ("n_layers", "d_model", "n_heads", "d_mlp", "act_fn", "n_ctx")


def make_config(arch: dict, d_vocab: int, device: str = "cpu"):
    from transformer_lens import HookedTransformerConfig

    missing = [k for k in ARCH_KEYS if k not in arch]
    if missing:
        raise ValueError(f"model architecture lacks {missing}; required keys: {', '.join(ARCH_KEYS)}")
    return HookedTransformerConfig(
        n_layers=arch["n_layers"], d_model=arch["d_model"], n_heads=arch["n_heads"],
        d_head=arch["d_model"] // arch["n_heads"], d_mlp=arch["d_mlp"], act_fn=arch["act_fn"],
        n_ctx=arch["n_ctx"], d_vocab=d_vocab, normalization_type="LN", positional_embedding_type="standard",
        seed=arch.get("seed", 0), device=device, default_prepend_bos=False,
    )


def build_model(arch: dict, tokenizer_dir: str | Path, device: str = "cpu"):
    from transformer_lens import HookedTransformer

    from saeflow.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    return HookedTransformer(make_config(arch, len(tok), device), tokenizer=tok)


def lm_loss(model, tokens) -> "torch.Tensor":
    """Mean next-token cross-entropy (nats) over positions 1..T-1 (BOS is never a target)."""
    return model(tokens, return_type="loss")


def train_lm(model, train_tokens: np.ndarray, eval_tokens: np.ndarray, steps: int, batch_size: int, lr: float,
             seed: int, log_every: int = 20, progress: bool = True) -> list[dict]:
    """AdamW with linear warm-up then cosine decay; returns the training curve.

    Each step draws `batch_size` windows (with replacement across epochs, seeded). The eval loss is
    measured on held-out windows at every `log_every` steps and at the end.
    """
    import torch
    from tqdm import tqdm

    g = torch.Generator().manual_seed(seed)
    train = torch.as_tensor(train_tokens, dtype=torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    curve = []
    model.train()
    for step in tqdm(range(steps), desc="train lm", disable=not progress, mininterval=5):
        idx = torch.randint(0, len(train), (batch_size,), generator=g)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = lm_loss(model, train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            row = {"step": step, "tokens": (step + 1) * batch_size * train.shape[1], "train_loss": loss.item(),
                   "lr": lr_at(step)}
            if step == steps - 1 or step % (log_every * 5) == 0:
                row["eval_loss"] = eval_loss(model, eval_tokens)
                model.train()
            curve.append(row)
    model.eval()
    return curve


def eval_loss(model, tokens: np.ndarray, batch_size: int = 32) -> float:
    """Token-weighted mean next-token loss (nats) on windows."""
    import torch

    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        t = torch.as_tensor(tokens, dtype=torch.long)
        for i in range(0, len(t), batch_size):
            b = t[i: i + batch_size]
            total += float(lm_loss(model, b)) * b.shape[0] * (b.shape[1] - 1)
            n += b.shape[0] * (b.shape[1] - 1)
    return total / n


def save_model(model, out_dir: Path, arch: dict) -> None:
    """Weights, architecture and a copy of the tokenizer, so the directory loads on its own."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out_dir / "model.safetensors"))
    (out_dir / "config.json").write_text(json.dumps({k: arch[k] for k in ARCH_KEYS} | {"seed": arch.get("seed", 0)},
                                                    indent=2, sort_keys=True))
    model.tokenizer.save_pretrained(str(out_dir / "tokenizer"))


def _load_base_model(model_dir: str | Path, device: str = "cpu"):
    """The model of an `lm` or `hf_model` artefact's `model/` directory, in eval mode.

    Embedded: rebuilt from `save_model`'s files (strict state-dict load). Hugging Face: `source.json`
    names the repo at its pinned revision and how to load it (saeflow.models.hf.load_hooked); a local copy
    listed for this job (`local_model_dirs`) is used instead of the hub.
    """
    source = Path(model_dir) / "source.json"
    if source.is_file():
        from saeflow.models import hf

        spec = json.loads(source.read_text())
        spec["local_dir"] = local_model_dirs().get(f"{spec['hf_id']}@{spec['revision']}")
        return hf.load_hooked(spec, device)
    from safetensors.torch import load_file

    arch = json.loads((Path(model_dir) / "config.json").read_text())
    model = build_model(arch, Path(model_dir) / "tokenizer", device)
    model.load_state_dict(load_file(str(Path(model_dir) / "model.safetensors"), device=device), strict=True)
    return model.eval()


def load_model(model_dir: str | Path, device: str = "cpu"):
    """The model of an `lm`, `hf_model` or `randomize_lm` artefact's `model/` directory, in eval mode. A
    `randomize_lm` directory holds its base model's files and `randomized.json`: the base is loaded and
    re-initialised (saeflow.models.controls.randomized with the recorded seed)."""
    model = _load_base_model(model_dir, device)
    marker = Path(model_dir) / "randomized.json"
    if marker.is_file():
        from saeflow.models import controls

        spec = json.loads(marker.read_text())
        if spec.get("init") != controls.INIT or not isinstance(spec.get("seed"), int):
            raise ValueError(f"{marker}: expected {{'seed': <int>, 'init': {controls.INIT!r}}}, got {spec}")
        return controls.randomized(model, spec["seed"])
    return model


LOCAL_MODEL_DIRS_ENV = "SAEFLOW_MODEL_LOCAL_DIRS"


def local_model_dirs() -> dict:
    """{"<hf_id>@<revision>": local directory or None} for the running job (set by saeflow.workflow.jobs.start from
    the node's runtime section, which the config's `model.local_dir` fills; not part of any key)."""
    import os

    return json.loads(os.environ.get(LOCAL_MODEL_DIRS_ENV, "{}"))
