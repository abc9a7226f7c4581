"""Train sparse dictionaries (TopK SAEs, TopK skip transcoders) on cached activations.

Three kinds (``KINDS``):

- ``sparsify-topk``: EleutherAI sparsify ``SparseCoder`` (TopK SAE), trained by a manual loop that
  mirrors ``sparsify.Trainer`` (which cannot train from cached activations), then converted to the
  sae-lens ``TopKSAE`` format.
- ``sparsify-skip-transcoder``: the same with ``transcode=True, skip_connection=True``: x = MLP input,
  target y = MLP output; converted to ``TopKSkipTranscoder`` (see ``register_saelens_classes``).
- ``saelens-topk``: sae-lens' own ``TopKTrainingSAE`` trained by ``SAETrainer``; saved as an inference
  ``TopKSAE``.

Every kind leaves a sae-lens-format directory (``cfg.json`` + ``sae_weights.safetensors``) that
``saeflow.dictionaries.formats.load_saelens`` reads (``saeflow.dictionaries.codes`` gives one interface over
the loaded modules). Each sparsify conversion is verified on real activations by
``saeflow.dictionaries.fidelity.check_encode_fidelity`` (the same active latents on every token, up to float
ties); a failure raises.

torch, sae_lens and sparsify are imported inside the functions so that importing this module is instant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from saeflow.dictionaries.fidelity import check_encode_fidelity
from saeflow.dictionaries.formats import (canonical_json_files, convert_sparsify, load_saelens, sparsify_hookpoint,
                                         write_metadata)

KINDS = ("sparsify-topk", "sparsify-skip-transcoder", "saelens-topk", "saelens-relu")


SAELENS_KINDS = ("saelens-topk", "saelens-relu")


# Kinds whose sparsity is a fixed k (the others get it from a penalty: saelens-relu's L1 coefficient).
TOPK_KINDS = ("sparsify-topk", "sparsify-skip-transcoder", "saelens-topk")


TRANSCODER_KINDS = ("sparsify-skip-transcoder",)


# sparsify.Trainer defaults we keep: Adam, lr = 2e-4 / sqrt(num_latents / 2**14), linear warm-up over
# at most 1000 steps then linear decay to 0 (transformers' get_linear_schedule_with_warmup).
LR_WARMUP_STEPS = 1000


# sparsify's TrainConfig.auxk_alpha default is 0 (AuxK off); we use the 1/32 of Gao et al. (2024) so
# that dead latents get a gradient in short runs. Override with train_dictionary(auxk_alpha=...).
AUXK_ALPHA = 1 / 32


# sparsify counts a latent dead after 10M tokens without firing; short runs never get there, so the
# default window is min(10M, n_tokens / 10) (same window, converted to steps, for sae-lens).
DEAD_TOKENS_MAX = 10_000_000


CURVE_FIELDS = ("step", "tokens", "loss", "fvu", "l0", "dead_frac", "lr")


@dataclass
class TrainResult:
    """Outcome of ``train_dictionary``.

    curve: one row per logged step, keys ``CURVE_FIELDS``; step is 1-based, tokens = step * batch_size,
      loss/fvu/l0 are measured on that step's batch in the forward pass *before* its update (row 1 is
      the initialisation), dead_frac after it, lr is the rate the step used.
    native_dir: sparsify layout (``SparseCoder.load_from_disk``) or None for sae-lens-native kinds.
    saelens_dir: sae-lens layout, read by ``load_saelens``.
    fidelity: ``check_encode_fidelity`` result of the conversion, or None when nothing was converted.
    model: the trained module in memory (sparsify ``SparseCoder`` or sae-lens ``TopKTrainingSAE``);
      not serialised, for callers that want it without reloading.
    train_s: wall seconds of the training loop (benchmarks compare it with a bare library loop).
    """

    curve: list[dict]
    native_dir: Path | None
    saelens_dir: Path
    fidelity: dict | None
    model: Any = field(default=None, repr=False, compare=False)
    train_s: float = 0.0  # wall seconds of the training loop alone (no saving, conversion or checks)


def _rebatch(batches: Callable[[], Iterator], batch_size: int, n_steps: int, want_y: bool, d_in: int | None = None,
             device: str = "cpu"):
    """Yield exactly n_steps (x, y) batches of exactly batch_size rows on `device`, re-invoking batches() per epoch.

    Incoming batches of any row count are stitched together, so epoch ends and ragged batches are fine.
    """
    import torch

    buf_x, buf_y, have, produced = [], [], 0, 0
    while produced < n_steps:
        empty = True
        for x, y in batches():
            empty = False
            if (y is not None) != want_y:
                raise ValueError("batches() must yield y (MLP output) for transcoder kinds and None for SAE kinds")
            if x.ndim != 2 or (d_in is not None and x.shape[1] != d_in) or (y is not None and y.shape != x.shape):
                raise ValueError(f"batches() must yield x, y of shape [n, d_in={d_in}]; got {tuple(x.shape)}"
                                 f"{'' if y is None else ', ' + str(tuple(y.shape))}")
            buf_x.append(x.to(torch.float32))
            buf_y.append(None if y is None else y.to(torch.float32))
            have += x.shape[0]
            while have >= batch_size and produced < n_steps:
                bx = torch.cat(buf_x)
                by = None if not want_y else torch.cat(buf_y)
                yield bx[:batch_size].to(device), None if by is None else by[:batch_size].to(device)
                produced += 1
                buf_x, buf_y = [bx[batch_size:]], [None if by is None else by[batch_size:]]
                have -= batch_size
            if produced >= n_steps:
                return
        if empty:
            raise ValueError("batches() returned an empty iterator")


def _check_finite_loss(kind: str, step: int, batch_size: int, loss, x, y) -> None:
    """Fail at the first non-finite loss, naming the step and its batch (tokens [(step-1)*bs, step*bs) of the
    stream) and whether the batch itself held a non-finite activation (a bad cache) or not (divergence)."""
    import torch

    if not torch.isfinite(loss).all():
        bad_in = not bool(torch.isfinite(x).all()) or (y is not None and not bool(torch.isfinite(y).all()))
        raise FloatingPointError(
            f"{kind} training: non-finite loss {float(loss.detach()):.4g} at step {step} (batch of stream tokens "
            f"{(step - 1) * batch_size}..{step * batch_size - 1}); "
            + ("the batch holds non-finite activations: check the cache (saeflow verify)" if bad_in
               else "the batch is finite: training diverged (lower the lr)"))


def _check_finite_weights(kind: str, module) -> None:
    import torch

    bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise FloatingPointError(f"{kind} training produced non-finite weights in {', '.join(bad)}; nothing was saved")


def _lr_lambda(n_steps: int, warmup: int):
    # transformers.get_linear_schedule_with_warmup, as sparsify's Adam path uses
    def f(s: int) -> float:
        if s < warmup:
            return s / max(1, warmup)
        return max(0.0, (n_steps - s) / max(1, n_steps - warmup))
    return f


def _train_sparsify(kind, stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, auxk_alpha, dead_tokens,
                    log_every, progress, curve, device="cpu"):
    """Manual sparsify training loop, step for step as ``sparsify.Trainer.fit`` with loss_fn="fvu".

    Step 1 initialises b_dec = mean(target) and, for transcoders, encoder.bias = -mean(x) @ W_enc.T
    (centred pre-activations). Each step: (SAE only) unit-normalise W_dec; forward with
    dead_mask = tokens_since_fired > dead_tokens; loss = fvu + auxk_alpha * auxk_loss; backward;
    (SAE only) remove the gradient parallel to decoder rows; Adam step; schedule step; then
    tokens_since_fired += batch, reset for latents among the TopK indices. As in sparsify, the decoder
    norm constraint applies to SAEs only (``normalize_decoder and not transcode``): a transcoder's
    decoder is free. The final unit-normalisation after the last step is ours (sparsify renormalises
    at the next forward), so the saved SAE decoder is exactly unit norm.
    """
    import torch
    from sparsify import SparseCoder, SparseCoderConfig
    from tqdm.auto import tqdm

    transcode = kind in TRANSCODER_KINDS
    torch.manual_seed(seed)
    # num_latents sets the width; expansion_factor (ignored when num_latents is set) says the same where it can,
    # so a reader of cfg.json is not told x32 of a x4 dictionary
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, expansion_factor=max(1, d_sae // d_in), k=k,
                                                transcode=transcode, skip_connection=transcode),
                        device=device, dtype=torch.float32)
    norm_dec = coder.cfg.normalize_decoder and not transcode
    opt = torch.optim.Adam(coder.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(n_steps, min(LR_WARMUP_STEPS, n_steps // 10)))
    since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
    for step, (x, y) in enumerate(tqdm(stream, total=n_steps, disable=not progress, desc=kind), 1):
        target = y if transcode else x
        if step == 1:
            with torch.no_grad():
                if transcode:
                    coder.encoder.bias.data = -x.mean(0) @ coder.encoder.weight.data.T
                coder.b_dec.data = target.mean(0)
        if norm_dec:
            coder.set_decoder_norm_to_unit_norm()
        dead = since_fired > dead_tokens
        out = coder(x, y if transcode else None, dead_mask=dead if auxk_alpha > 0 else None)
        loss = out.fvu + auxk_alpha * out.auxk_loss
        _check_finite_loss(kind, step, batch_size, loss, x, y)
        loss.backward()
        if norm_dec:
            coder.remove_gradient_parallel_to_decoder_directions()
        lr_now = opt.param_groups[0]["lr"]
        opt.step()
        opt.zero_grad()
        sched.step()
        with torch.no_grad():
            since_fired += x.shape[0]
            since_fired[out.latent_indices.flatten()] = 0
        if (step - 1) % log_every == 0 or step == n_steps:
            curve.append({"step": step, "tokens": step * batch_size, "loss": loss.item(), "fvu": out.fvu.item(),
                          "l0": (out.latent_acts > 0).sum(-1).float().mean().item(),
                          "dead_frac": (since_fired > dead_tokens).float().mean().item(), "lr": lr_now})
    if norm_dec:
        coder.set_decoder_norm_to_unit_norm()
    return coder.eval()


def _train_saelens(stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, dead_tokens, hook_name,
                   log_every, progress, curve, device="cpu", l1_coefficient=None):
    """sae-lens ``TopKTrainingSAE`` (library defaults: rescale_acts_by_decoder_norm, decoder_init_norm 0.1,
    AuxK coefficient 1), or with ``k`` None sae-lens' ReLU ``StandardTrainingSAE`` (loss = MSE +
    ``l1_coefficient`` * sum_i f_i ||W_dec[i]||, sae-lens' L1 of the decoder-norm-weighted codes, with its
    own L1 warm-up off), trained by ``SAETrainer`` (Adam, grad-norm clip 1) with W&B and checkpoints off.
    Two settings follow sparsify so the kinds are comparable: b_dec starts at the first batch's mean
    (sae-lens 6 starts it at 0, which costs many steps on activations with a large mean) and the lr
    schedule is linear warm-up then linear decay to 0. Curve rows are computed from each step's
    ``TrainStepOutput``: fvu = sum (x_hat - x)^2 / sum (x - mean x)^2, l0 = mean #nonzero latents.
    """
    import sae_lens.training.sae_trainer as st
    import torch
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    common = {"d_in": d_in, "d_sae": d_sae, "dtype": "float32", "device": device,
              "metadata": SAEMetadata(hook_name=hook_name)}
    if k is None:
        kind = "saelens-relu"
        sae = StandardTrainingSAE(StandardTrainingSAEConfig(**common, l1_coefficient=l1_coefficient))
    else:
        kind = "saelens-topk"
        sae = TopKTrainingSAE(TopKTrainingSAEConfig(**common, k=k))
    warmup = min(LR_WARMUP_STEPS, n_steps // 10)
    cfg = SAETrainerConfig(total_training_samples=n_steps * batch_size, train_batch_size_samples=batch_size,
                           lr=lr, lr_end=lr, lr_warm_up_steps=warmup, lr_decay_steps=n_steps - warmup,
                           dead_feature_window=max(1, math.ceil(dead_tokens / batch_size)),
                           n_checkpoints=0, checkpoint_path=None, save_final_checkpoint=False,
                           logger=LoggingConfig(log_to_wandb=False), device=str(device))

    class Trainer(st.SAETrainer):
        def step(self, batch):
            if self.n_training_steps == 0:  # b_dec = mean of the first batch, as sparsify initialises it
                with torch.no_grad():
                    self.sae.b_dec.data = batch.mean(0).to(self.sae.b_dec.dtype)
            lr_now = self.optimizer.param_groups[0]["lr"]
            out = super().step(batch)
            s = self.n_training_steps + 1  # fit() increments after step()
            _check_finite_loss(kind, s, batch_size, out.loss, batch, None)
            if (s - 1) % log_every == 0 or s == n_steps:
                with torch.no_grad():
                    x, x_hat = out.sae_in, out.sae_out
                    fvu = (x_hat - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
                    curve.append({"step": s, "tokens": s * batch_size, "loss": out.loss.item(), "fvu": fvu.item(),
                                  "l0": out.feature_acts.bool().sum(-1).float().mean().item(),
                                  "dead_frac": self.dead_neurons.float().mean().item(), "lr": lr_now})
            return out

    provider = (x for x, _ in stream)
    orig_tqdm = st.tqdm
    if not progress:  # fit() always opens a tqdm bar
        st.tqdm = lambda *a, **kw: orig_tqdm(*a, **{**kw, "disable": True})
    try:
        Trainer(cfg, sae, provider).fit()
    finally:
        st.tqdm = orig_tqdm
    return sae.eval()


def train_dictionary(kind: str, batches: Callable[[], Iterator], d_in: int, d_sae: int, k: int | None,
                     n_tokens: int, batch_size: int, lr: float | None, seed: int, out_dir: Path,
                     hook_name: str, hook_name_out: str | None = None, check_batch: tuple | None = None,
                     log_every: int = 10, progress: bool = True, *, auxk_alpha: float = AUXK_ALPHA,
                     dead_tokens: int | None = None, device: str = "cpu",
                     l1_coefficient: float | None = None, metadata: dict | None = None) -> TrainResult:
    """Train one dictionary of ``kind`` on activation batches and save it under ``out_dir``.

    batches(): a fresh iterator of float32 (x, y), x [n, d_in]; y None for SAEs, the MLP output for
      transcoders (x = MLP input). Rows are re-cut into batches of exactly ``batch_size``; training
      runs n_steps = n_tokens // batch_size steps (a remainder under one batch is dropped), calling
      batches() again for each further epoch.
    lr: None -> sparsify's rule 2e-4 / sqrt(d_sae / 2**14) (for every kind, so they are comparable);
      schedule: linear warm-up over min(1000, n_steps // 10) steps, then linear decay to 0.
    dead_tokens: a latent is dead after this many tokens without firing (None -> min(10M, n_tokens // 10));
      drives the AuxK loss and the curve's dead_frac.
    auxk_alpha: AuxK weight of the sparsify kinds (loss = fvu + auxk_alpha * auxk_loss); saelens-topk keeps
      sae-lens' own AuxK (coefficient 1 on its unnormalised aux MSE).
    k: the TopK kinds' active latents; None for saelens-relu, whose sparsity comes from ``l1_coefficient``
      (required there, refused elsewhere).
    Layout: out_dir/"native"/<hookpoint> (sparsify kinds: sparsify's own layout, ``SparseCoder.save_to_disk`` in
      the folder of sparsify's hookpoint name, ``saeflow.dictionaries.formats.sparsify_hookpoint``, so
      ``SparseCoder.load_many(out_dir / "native", local=True)`` reads it; reload-checked) and out_dir/"saelens"
      (sae-lens format, ``load_saelens``), whose cfg.json metadata gets ``metadata`` (model, hooks, context size,
      dataset: ``formats.write_metadata``). Sparsify conversions are checked with
      ``check_encode_fidelity`` on ``check_batch`` (default: the first batch of batches()); a failed check
      raises RuntimeError. Deterministic on CPU for a given seed and batch order.
    device: where the training loop runs (batches are moved there); the saved dictionary, the conversion and
      the fidelity check are on the CPU in float32.
    Finiteness: a non-finite loss fails at its step (FloatingPointError naming the step, its tokens and
      whether the batch itself was finite), and non-finite trained weights fail before anything is saved.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    topk = kind in TOPK_KINDS
    if not topk and (k is not None or not (isinstance(l1_coefficient, (int, float)) and l1_coefficient > 0)):
        raise ValueError(f"kind {kind!r} takes k=None and l1_coefficient > 0; got k={k!r}, "
                         f"l1_coefficient={l1_coefficient!r}")
    if topk and l1_coefficient is not None:
        raise ValueError(f"l1_coefficient is only for saelens-relu; kind {kind!r} has k={k!r}")
    for name, v in (("d_in", d_in), ("d_sae", d_sae), ("k", k if topk else 1), ("batch_size", batch_size),
                    ("log_every", log_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if topk and k >= d_sae:
        raise ValueError(f"k must be < d_sae ({d_sae}); got {k}")
    if not isinstance(n_tokens, int) or n_tokens < batch_size:
        raise ValueError(f"n_tokens must be an integer >= batch_size ({batch_size}); got {n_tokens!r}")
    if lr is not None and not lr > 0:
        raise ValueError(f"lr must be > 0 or None; got {lr!r}")
    if not auxk_alpha >= 0:
        raise ValueError(f"auxk_alpha must be >= 0; got {auxk_alpha!r}")
    transcode = kind in TRANSCODER_KINDS
    if transcode and not hook_name_out:
        raise ValueError(f"hook_name_out is required for kind {kind!r} (the MLP output hook)")
    if not transcode and hook_name_out is not None:
        raise ValueError(f"hook_name_out must be None for kind {kind!r} (only for {', '.join(TRANSCODER_KINDS)})")

    out_dir = Path(out_dir)
    n_steps = n_tokens // batch_size
    lr = lr or 2e-4 / (d_sae / 2**14) ** 0.5
    dead_tokens = dead_tokens if dead_tokens is not None else min(DEAD_TOKENS_MAX, max(1, n_tokens // 10))
    stream = _rebatch(batches, batch_size, n_steps, want_y=transcode, d_in=d_in, device=device)
    curve: list[dict] = []

    t0 = time.perf_counter()
    if kind in SAELENS_KINDS:
        sae = _train_saelens(stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, dead_tokens, hook_name,
                             log_every, progress, curve, device, l1_coefficient).to("cpu")
        _check_finite_weights(kind, sae)
        saelens_dir = out_dir / "saelens"
        train_s = time.perf_counter() - t0
        sae.save_inference_model(saelens_dir)
        canonical_json_files(saelens_dir)
        load_saelens(saelens_dir)  # fails loudly if the saved directory is unreadable
        if metadata:
            write_metadata(saelens_dir, metadata)
        return TrainResult(curve, None, saelens_dir, None, model=sae, train_s=train_s)

    import torch
    from sparsify import SparseCoder

    coder = _train_sparsify(kind, stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, auxk_alpha,
                            dead_tokens, log_every, progress, curve, device).to("cpu")
    _check_finite_weights(kind, coder)
    train_s = time.perf_counter() - t0
    native_dir = out_dir / "native" / sparsify_hookpoint(hook_name, transcode)
    coder.save_to_disk(native_dir)
    canonical_json_files(native_dir)
    native = SparseCoder.load_from_disk(native_dir, device="cpu")
    saved, trained = native.state_dict(), coder.state_dict()
    if saved.keys() != trained.keys() or not all(torch.equal(saved[n], trained[n]) for n in saved):
        raise RuntimeError(f"sparsify coder in {native_dir} does not reload identically")
    saelens_dir = out_dir / "saelens"
    convert_sparsify(native, hook_name, hook_name_out).save_model(saelens_dir)
    canonical_json_files(saelens_dir)
    if metadata:
        write_metadata(saelens_dir, metadata)
    if check_batch is None:
        check_batch = next(iter(batches()))
    check_x = check_batch if isinstance(check_batch, torch.Tensor) else check_batch[0]
    fidelity = check_encode_fidelity(native, load_saelens(saelens_dir), check_x)
    if not fidelity["passed"]:
        raise RuntimeError(f"sae-lens conversion of {native_dir} changes the encoding: {fidelity}")
    return TrainResult(curve, native_dir, saelens_dir, fidelity, model=coder, train_s=train_s)
