"""Tiny random dictionaries in each format's exact on-disk layout (sae-lens current / legacy / Gemma
Scope ``params.npz``, sparsify, dictionary_learning ``ae.pt``), for tests and offline presets: they load
through the real loaders of ``saeflow.dictionaries.pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path

from saeflow.dictionaries.pretrained import DL_CONFIG, DL_WEIGHTS, FORMATS, SAELENS_ARCHITECTURES, dl_autoencoder
from saeflow.tensors import to_numpy

DEFAULT_TINY_IDS = {"saelens": "{hook_name}", "sparsify": "layers.{layer}",
                    "dictionary_learning": "resid_out_layer{layer}/10_32768"}


def _tiny_weights(d_in: int, d_sae: int, seed: int):
    """Random weights with a sizeable b_dec (so a dropped x - b_dec shift changes the codes)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    W_enc = torch.randn(d_in, d_sae, generator=g) / d_in**0.5
    W_dec = torch.randn(d_sae, d_in, generator=g)
    W_dec = W_dec / W_dec.norm(dim=1, keepdim=True)
    b_enc = 0.1 * torch.randn(d_sae, generator=g)
    b_dec = 2.0 * torch.randn(d_in, generator=g)
    return W_enc, b_enc, W_dec, b_dec, g


def write_tiny(format: str, root: str | Path, layer: int, d_in: int, d_sae: int, hook_name: str, seed: int,
               k: int | None = None, architecture: str = "topk", sae_id: str | None = None,
               cfg_style: str = "current", dtype: str = "float32") -> Path:
    """Write a random tiny dictionary in ``format``'s on-disk layout under root; return its folder.

    sae_id: the folder under root (default ``DEFAULT_TINY_IDS``: hook_name, ``layers.<L>``,
    ``resid_out_layer<L>/10_32768``; the name is the real repos', the size is d_sae).
    saelens: ``<root>/<sae_id>/cfg.json + sae_weights.safetensors`` as ``SAE.save_model`` writes them, for
      architecture "topk" (k required), "jumprelu" (positive per-latent thresholds) or "standard" (ReLU);
      cfg_style="legacy" writes a pre-6.0 cfg.json (hook_point, activation_fn_str, ...) as older hub repos
      have, "gemma_scope" writes Gemma Scope's ``params.npz`` (W_enc, W_dec, b_enc, b_dec, threshold;
      jumprelu only) instead.
    sparsify: ``<root>/<sae_id>/cfg.json + sae.safetensors`` by ``SparseCoder.save_to_disk`` (k required;
      dtype "float32" or "bfloat16").
    dictionary_learning: ``<root>/<sae_id>/ae.pt`` (``torch.save`` of the AutoEncoder state dict) + ``config.json``
      ({"trainer": ..., "buffer": ...} as dictionary_learning's trainSAE writes it).
    """
    import torch

    root = Path(root)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}; got {format!r}")
    sae_id = sae_id or DEFAULT_TINY_IDS[format].format(layer=layer, hook_name=hook_name)
    folder = root / sae_id
    W_enc, b_enc, W_dec, b_dec, g = _tiny_weights(d_in, d_sae, seed)

    if format == "saelens":
        if architecture not in SAELENS_ARCHITECTURES:
            raise ValueError(f"architecture must be one of {SAELENS_ARCHITECTURES}; got {architecture!r}")
        if architecture == "topk" and not k:
            raise ValueError("k is required for a TopK SAE")
        threshold = 0.2 + 0.3 * torch.rand(d_sae, generator=g)
        if cfg_style == "gemma_scope":
            import numpy as np

            if architecture != "jumprelu":
                raise ValueError("Gemma Scope SAEs are JumpReLU")
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(folder / "params.npz", **{n: to_numpy(t) for n, t in (
                ("W_enc", W_enc), ("W_dec", W_dec), ("b_enc", b_enc), ("b_dec", b_dec), ("threshold", threshold))})
            return folder
        if cfg_style == "legacy":
            from safetensors.torch import save_file

            cfg = {"model_name": "tiny", "hook_point": hook_name, "hook_point_layer": layer,
                   "hook_point_head_index": None, "d_in": d_in, "d_sae": d_sae, "dtype": "float32",
                   "device": "cpu", "apply_b_dec_to_input": True, "finetuning_scaling_factor": False,
                   "context_size": 64, "prepend_bos": True, "normalize_activations": "none",
                   "dataset_path": "tiny", "activation_fn_str": "relu", "activation_fn_kwargs": {}}
            if architecture == "topk":
                cfg.update(activation_fn_str="topk", activation_fn_kwargs={"k": k})
            elif architecture == "jumprelu":
                cfg["architecture"] = "jumprelu"
            tensors = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
            if architecture == "jumprelu":
                tensors["threshold"] = threshold
            folder.mkdir(parents=True, exist_ok=True)
            save_file({n: t.contiguous() for n, t in tensors.items()}, folder / "sae_weights.safetensors")
            (folder / "cfg.json").write_text(json.dumps(cfg))
            return folder
        if cfg_style != "current":
            raise ValueError(f"cfg_style must be 'current', 'legacy' or 'gemma_scope'; got {cfg_style!r}")
        import sae_lens
        from sae_lens.saes.sae import SAEMetadata

        meta = SAEMetadata(hook_name=hook_name, model_name="tiny")
        common = dict(d_in=d_in, d_sae=d_sae, dtype="float32", device="cpu", metadata=meta)
        if architecture == "topk":
            sae = sae_lens.TopKSAE(sae_lens.TopKSAEConfig(k=k, **common))
        elif architecture == "jumprelu":
            sae = sae_lens.JumpReLUSAE(sae_lens.JumpReLUSAEConfig(**common))
        else:
            sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(**common))
        sd = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        if architecture == "jumprelu":
            sd["threshold"] = threshold
        sae.load_state_dict(sd)
        sae.save_model(folder)
        return folder

    if format == "sparsify":
        from sparsify import SparseCoder, SparseCoderConfig

        if not k:
            raise ValueError("k is required for a sparsify coder")
        coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k), device="cpu")
        with torch.no_grad():
            coder.encoder.weight.copy_(W_enc.T)
            coder.encoder.bias.copy_(b_enc)
            coder.W_dec.copy_(W_dec)
            coder.b_dec.copy_(b_dec)
        coder = coder.to({"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype])
        coder.save_to_disk(folder)
        return folder

    ae = dl_autoencoder(d_in, d_sae)
    with torch.no_grad():
        ae.encoder.weight.copy_(W_enc.T)
        ae.encoder.bias.copy_(b_enc)
        ae.decoder.weight.copy_(W_dec.T)
        ae.bias.copy_(b_dec)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({n: t.detach().cpu() for n, t in ae.state_dict().items()}, folder / DL_WEIGHTS)
    config = {"trainer": {"dict_class": "AutoEncoder", "trainer_class": "StandardTrainer", "activation_dim": d_in,
                          "dict_size": d_sae, "lr": 1e-4, "l1_penalty": 0.1, "warmup_steps": 1000,
                          "resample_steps": None, "device": "cpu", "layer": layer, "lm_name": "tiny",
                          "wandb_name": "StandardTrainer", "submodule_name": f"resid_out_layer{layer}",
                          "seed": seed},
              "buffer": {"d_submodule": d_in, "io": "out", "n_ctxs": 1000, "ctx_len": 128,
                         "refresh_batch_size": 32, "out_batch_size": 1024, "device": "cpu"}}
    (folder / DL_CONFIG).write_text(json.dumps(config, indent=4))
    return folder
