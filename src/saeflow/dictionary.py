"""Train sparse dictionaries (TopK SAEs, TopK skip transcoders) on cached activations.

Three kinds (``KINDS``):

- ``sparsify-topk``: EleutherAI sparsify ``SparseCoder`` (TopK SAE), trained by a manual loop that
  mirrors ``sparsify.Trainer`` (which cannot train from cached activations), then converted to the
  sae-lens ``TopKSAE`` format.
- ``sparsify-skip-transcoder``: the same with ``transcode=True, skip_connection=True``: x = MLP input,
  target y = MLP output; converted to ``TopKSkipTranscoder`` (see ``_saelens_classes``).
- ``saelens-topk``: sae-lens' own ``TopKTrainingSAE`` trained by ``SAETrainer``; saved as an inference
  ``TopKSAE``.

Every kind leaves a sae-lens-format directory (``cfg.json`` + ``sae_weights.safetensors``) that
``load_saelens`` reads; ``encode``/``decode``/``reconstruct`` give one interface over the loaded
modules (and over sparsify ``SparseCoder``s). Each sparsify conversion is verified on real activations
by ``check_encode_fidelity`` (identical active latents on every token); a failure raises.

torch, sae_lens and sparsify are imported inside the functions so that importing this module is instant.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

KINDS = ("sparsify-topk", "sparsify-skip-transcoder", "saelens-topk")
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
FIDELITY_RTOL = 1e-4
# Selection scores this close to the boundary (relative) are a float tie: see check_encode_fidelity.
TIE_RTOL = 1e-4

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


# --------------------------------------------------------------------------------------------------
# sae-lens classes for sparsify transcoders

_CLASSES: dict[str, tuple[type, type]] = {}


def _saelens_classes() -> dict[str, tuple[type, type]]:
    """TopK transcoder classes for sae-lens, registered once (architectures below).

    sae-lens 6.54 has ``Transcoder``/``SkipTranscoder`` (ReLU) and JumpReLU variants but no TopK
    transcoder. ``TopKSkipTranscoder`` is ``SkipTranscoder`` with the activation replaced by sae-lens'
    own ``TopK(k)`` and ``k`` added to the config; nothing else differs: same weights and layout
    (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_out], b_dec [d_out], W_skip [d_out, d_in]), same
    forward ``y_hat = TopK(x @ W_enc + b_enc) @ W_dec + b_dec + x @ W_skip.T``, no ``x - b_dec`` shift
    (sparsify does not shift transcoder inputs either). Its ``cfg.json`` says
    ``"architecture": "topk_skip_transcoder"`` (``"topk_transcoder"`` without skip), so plain sae-lens
    refuses to load it until this registration has run (``load_saelens`` does it). A plain sae-lens
    could read the weights as ``skip_transcoder`` by editing the architecture, but would then apply a
    ReLU instead of TopK (dense codes) - hence the distinct name rather than a silently wrong load.
    """
    if _CLASSES:
        return _CLASSES
    from dataclasses import dataclass as _dc

    from sae_lens.registry import SAE_CLASS_REGISTRY, register_sae_class
    from sae_lens.saes.topk_sae import TopK
    from sae_lens.saes.transcoder import SkipTranscoder, SkipTranscoderConfig, Transcoder, TranscoderConfig

    @_dc
    class TopKTranscoderConfig(TranscoderConfig):
        k: int = 100

        @classmethod
        def architecture(cls) -> str:
            return "topk_transcoder"

    @_dc
    class TopKSkipTranscoderConfig(SkipTranscoderConfig):
        k: int = 100

        @classmethod
        def architecture(cls) -> str:
            return "topk_skip_transcoder"

    class TopKTranscoder(Transcoder):
        """sae-lens ``Transcoder`` with sparsify's TopK activation (see ``_saelens_classes``)."""

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    class TopKSkipTranscoder(SkipTranscoder):
        """sae-lens ``SkipTranscoder`` with sparsify's TopK activation (see ``_saelens_classes``)."""

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    for sae_cls, cfg_cls in ((TopKTranscoder, TopKTranscoderConfig),
                             (TopKSkipTranscoder, TopKSkipTranscoderConfig)):
        arch = cfg_cls.architecture()
        if arch not in SAE_CLASS_REGISTRY:  # another copy of this module may have registered it
            register_sae_class(arch, sae_cls, cfg_cls)
        _CLASSES[arch] = SAE_CLASS_REGISTRY[arch]
    return _CLASSES


# --------------------------------------------------------------------------------------------------
# Conversion, loading and the common interface

def convert_sparsify(coder, hook_name: str, hook_name_out: str | None = None):
    """sae-lens module equivalent to a sparsify ``SparseCoder`` (CPU, float32).

    SAE (``transcode=False``): ``TopKSAE`` with W_enc = encoder.weight.T, b_enc = encoder.bias,
    W_dec, b_dec, k, ``apply_b_dec_to_input=True`` (sparsify encodes ``x - b_dec``) and
    ``rescale_acts_by_decoder_norm=False`` (sparsify selects on raw pre-activations).
    Transcoder: ``TopKSkipTranscoder`` / ``TopKTranscoder`` (see ``_saelens_classes``), d_out = d_in,
    plus W_skip when present; ``hook_name_out`` goes to ``cfg.metadata.hook_name_out``.
    Both libraries keep W_dec as [d_sae, d_out]: no transpose (sae-lens' own sparsify loader gets
    this wrong for sparsify 1.3.3). TopK then ReLU (sae-lens) and ReLU then TopK (sparsify) give the
    same nonzero latents.
    """
    import torch
    from sae_lens import TopKSAE, TopKSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    c = coder.cfg
    if c.activation != "topk":
        raise ValueError(f"coder.cfg.activation must be 'topk', got {c.activation!r}")
    sd = {"W_enc": coder.encoder.weight.T, "b_enc": coder.encoder.bias, "W_dec": coder.W_dec,
          "b_dec": coder.b_dec}
    common = dict(d_in=coder.d_in, d_sae=coder.num_latents, k=c.k, dtype="float32", device="cpu")
    if not c.transcode:
        if coder.W_skip is not None:
            raise ValueError("a skip connection without transcode=True has no sae-lens equivalent")
        sae = TopKSAE(TopKSAEConfig(**common, apply_b_dec_to_input=True, rescale_acts_by_decoder_norm=False,
                                    metadata=SAEMetadata(hook_name=hook_name)))
    else:
        if hook_name_out is None:
            raise ValueError("hook_name_out is required for a transcoder")
        sae_cls, cfg_cls = _saelens_classes()["topk_skip_transcoder" if coder.W_skip is not None
                                               else "topk_transcoder"]
        sae = sae_cls(cfg_cls(**common, d_out=coder.d_in, apply_b_dec_to_input=False,
                              metadata=SAEMetadata(hook_name=hook_name, hook_name_out=hook_name_out)))
        if coder.W_skip is not None:
            sd["W_skip"] = coder.W_skip
    sae.load_state_dict({n: t.detach().to(torch.float32).contiguous().clone() for n, t in sd.items()})
    return sae.eval()


def canonical_json_files(folder: str | Path) -> None:
    """Rewrite every JSON file of a saved dictionary (sae-lens / sparsify `cfg.json`) with sorted keys:
    sae-lens' key order varies between runs, and a rebuilt artefact with the same inputs must have the
    same file hashes."""
    import json

    for f in sorted(Path(folder).rglob("*.json")):
        f.write_text(json.dumps(json.loads(f.read_text()), indent=2, sort_keys=True) + "\n")


def load_saelens(path: str | Path):
    """Any dictionary saved in sae-lens format (incl. the TopK transcoders here), CPU float32, eval mode."""
    from sae_lens import SAE

    _saelens_classes()
    return SAE.load_from_disk(str(path), device="cpu", dtype="float32").eval()


def _is_sparsify(module) -> bool:
    return hasattr(module, "encoder") and hasattr(module, "num_latents")


def encode(dict_module, x):
    """Dense latent codes f [..., d_sae] (zeros off the active set) for a sae-lens or sparsify module."""
    import torch

    if _is_sparsify(dict_module):
        top_acts, top_idx, _ = dict_module.encode(x.reshape(-1, x.shape[-1]))
        f = torch.zeros(top_acts.shape[0], dict_module.num_latents, dtype=top_acts.dtype, device=x.device)
        return f.scatter(-1, top_idx, top_acts).reshape(*x.shape[:-1], -1)
    return dict_module.encode(x)


def decode(dict_module, f):
    """f @ W_dec + b_dec. For a skip transcoder this omits the skip term x @ W_skip.T: use ``reconstruct``."""
    if _is_sparsify(dict_module):
        return f @ dict_module.W_dec + dict_module.b_dec
    return dict_module.decode(f)


def skip_term(dict_module, x):
    """x @ W_skip.T for a skip transcoder, None for dictionaries without a skip connection."""
    W_skip = getattr(dict_module, "W_skip", None)
    return None if W_skip is None else x @ W_skip.T


def reconstruct(dict_module, x):
    """x_hat for an SAE; for a transcoder the predicted MLP output, skip connection included."""
    out = decode(dict_module, encode(dict_module, x))
    skip = skip_term(dict_module, x)
    return out if skip is None else out + skip


def selection_scores(dict_module, x):
    """(scores s [n, d_sae], boundary b, k) of how a dictionary picks its active latents on x [n, d_in].

    A latent i is active on token t iff s[t, i] > b[t, i] (ReLU: s = pre-activation, b = 0; JumpReLU:
    b = the latent's threshold) or, for TopK (k not None), iff it is among the k largest s[t] and s > 0
    (s = relu(pre-activation), as sparsify and sae-lens select; b[t] = the k-th largest s[t]). The
    pre-activation is the one the module's own ``encode`` computes (sae-lens: captured at its
    ``hook_sae_acts_pre``, times the decoder norms when it rescales before TopK).
    """
    import torch

    if _is_sparsify(dict_module):
        xin = x if dict_module.cfg.transcode else x - dict_module.b_dec
        s = torch.relu(torch.nn.functional.linear(xin, dict_module.encoder.weight, dict_module.encoder.bias))
        k = int(dict_module.cfg.k)
    elif hasattr(dict_module, "encoder") and hasattr(dict_module, "bias"):  # dictionary_learning AutoEncoder
        return dict_module.encoder(x - dict_module.bias), torch.zeros((), dtype=x.dtype, device=x.device), None
    else:
        seen = []
        handle = dict_module.hook_sae_acts_pre.register_forward_hook(lambda _m, _i, out: seen.append(out))
        try:
            dict_module.encode(x)
        finally:
            handle.remove()
        s = seen[-1]
        cfg = dict_module.cfg
        k = getattr(cfg, "k", None)
        if k is None:
            threshold = getattr(dict_module, "threshold", None)
            b = torch.zeros((), dtype=s.dtype, device=s.device) if threshold is None else threshold.to(s.dtype)
            return s, b, None
        if getattr(cfg, "rescale_acts_by_decoder_norm", False):
            s = s * dict_module.W_dec.norm(dim=-1)
        s, k = torch.relu(s), int(k)
    return s, s.topk(k, dim=-1).values[:, -1:], k


def check_encode_fidelity(native, converted, x) -> dict:
    """Compare a dictionary and its sae-lens conversion (or reloaded copy) on activations x [n, d_in].

    Active set A(t) = {i : f_i(t) > 0} per token t (sparsify may return zero-valued TopK slots when
    fewer than k pre-activations are positive, sae-lens picks other zero slots: only nonzeros count).
    jaccard(t) = |A_n & A_c| / |A_n | A_c| (1 when both are empty).

    A token whose sets differ is a *tie*, not a difference, when every latent i of the symmetric
    difference S(t) sits on the selection boundary in both modules (``selection_scores``):
    |s_i(t) - b_i(t)| <= TIE_RTOL * max(|b_i(t)|, rms_j s_j(t)), e.g. the k-th and (k+1)-th TopK
    pre-activations 2e-7 apart, where which one wins depends on the machine's kernels. The
    reconstructions are then compared with the tied latents' contributions removed:
    x_hat'(t) = decode(f(t) with S(t) zeroed) (+ skip term). ``passed`` requires every differing token to
    be a tie and max|x_hat'_n - x_hat'_c| <= FIDELITY_RTOL * max|x_hat_n| (on identical tokens x_hat' = x_hat).
    A real difference (e.g. a dropped ``x - b_dec`` shift) moves many latents far from any boundary and fails.
    """
    import torch

    with torch.no_grad():
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        f_n, f_c = encode(native, x), encode(converted, x)
        r_n = reconstruct(native, x)
        a_n, a_c = f_n > 0, f_c > 0
        inter, union = (a_n & a_c).sum(-1).float(), (a_n | a_c).sum(-1).float()
        jac = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        identical = (a_n == a_c).all(-1)
        sym = a_n != a_c
        tied = torch.zeros_like(identical)
        if not identical.all():
            rows = (~identical).nonzero().flatten()
            on_boundary = torch.ones(len(rows), len(f_n[0]), dtype=torch.bool, device=x.device)
            for module in (native, converted):
                s, b, _ = selection_scores(module, x[rows])
                b = b.expand_as(s)
                scale = torch.maximum(b.abs(), s.pow(2).mean(-1, keepdim=True).sqrt())
                on_boundary &= (s - b).abs() <= TIE_RTOL * scale
            tied[rows] = (on_boundary | ~sym[rows]).all(-1)
        keep = (~sym).to(f_n.dtype)
        skip = skip_term(native, x)
        r_n_kept = decode(native, f_n * keep) + (0 if skip is None else skip)
        skip_c = skip_term(converted, x)
        r_c_kept = decode(converted, f_c * keep) + (0 if skip_c is None else skip_c)
        recon_diff = (r_n_kept - r_c_kept).abs().max().item()
        rel = recon_diff / max(r_n.abs().max().item(), 1e-12)
        res = {"n_tokens": int(x.shape[0]), "jaccard_min": jac.min().item(), "jaccard_mean": jac.mean().item(),
               "identical_active_frac": identical.float().mean().item(), "n_tied_tokens": int(tied.sum().item()),
               "n_differing_tokens": int((~identical & ~tied).sum().item()),
               "max_abs_latent_diff": ((f_n - f_c) * keep).abs().max().item(), "max_abs_recon_diff": recon_diff,
               "rel_recon_diff": rel, "tie_rtol": TIE_RTOL}
    res["passed"] = res["n_differing_tokens"] == 0 and rel <= FIDELITY_RTOL
    return res


# --------------------------------------------------------------------------------------------------
# Training

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
    coder = SparseCoder(d_in, SparseCoderConfig(num_latents=d_sae, k=k, transcode=transcode,
                                                skip_connection=transcode), device=device, dtype=torch.float32)
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
                   log_every, progress, curve, device="cpu"):
    """sae-lens ``TopKTrainingSAE`` (library defaults: rescale_acts_by_decoder_norm, decoder_init_norm 0.1,
    AuxK coefficient 1) trained by ``SAETrainer`` (Adam, grad-norm clip 1) with W&B and checkpoints off.
    Two settings follow sparsify so the kinds are comparable: b_dec starts at the first batch's mean
    (sae-lens 6 starts it at 0, which costs many steps on activations with a large mean) and the lr
    schedule is linear warm-up then linear decay to 0. Curve rows are computed from each step's
    ``TrainStepOutput``: fvu = sum (x_hat - x)^2 / sum (x - mean x)^2, l0 = mean #nonzero latents.
    """
    import torch
    import sae_lens.training.sae_trainer as st
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.saes.sae import SAEMetadata

    torch.manual_seed(seed)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device=device,
                                                metadata=SAEMetadata(hook_name=hook_name)))
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
            _check_finite_loss("saelens-topk", s, batch_size, out.loss, batch, None)
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


def train_dictionary(kind: str, batches: Callable[[], Iterator], d_in: int, d_sae: int, k: int,
                     n_tokens: int, batch_size: int, lr: float | None, seed: int, out_dir: Path,
                     hook_name: str, hook_name_out: str | None = None, check_batch: tuple | None = None,
                     log_every: int = 10, progress: bool = True, *, auxk_alpha: float = AUXK_ALPHA,
                     dead_tokens: int | None = None, device: str = "cpu") -> TrainResult:
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
    Layout: out_dir/"native" (sparsify kinds: ``SparseCoder.save_to_disk``, reload-checked) and
      out_dir/"saelens" (sae-lens format, ``load_saelens``). Sparsify conversions are checked with
      ``check_encode_fidelity`` on ``check_batch`` (default: the first batch of batches()); a failed check
      raises RuntimeError. Deterministic on CPU for a given seed and batch order.
    device: where the training loop runs (batches are moved there); the saved dictionary, the conversion and
      the fidelity check are on the CPU in float32.
    Finiteness: a non-finite loss fails at its step (FloatingPointError naming the step, its tokens and
      whether the batch itself was finite), and non-finite trained weights fail before anything is saved.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    for name, v in (("d_in", d_in), ("d_sae", d_sae), ("k", k), ("batch_size", batch_size),
                    ("log_every", log_every)):
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer; got {v!r}")
    if k >= d_sae:
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
    if kind == "saelens-topk":
        sae = _train_saelens(stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, dead_tokens, hook_name,
                             log_every, progress, curve, device).to("cpu")
        _check_finite_weights(kind, sae)
        saelens_dir = out_dir / "saelens"
        train_s = time.perf_counter() - t0
        sae.save_inference_model(saelens_dir)
        canonical_json_files(saelens_dir)
        load_saelens(saelens_dir)  # fails loudly if the saved directory is unreadable
        return TrainResult(curve, None, saelens_dir, None, model=sae, train_s=train_s)

    import torch
    from sparsify import SparseCoder

    coder = _train_sparsify(kind, stream, d_in, d_sae, k, n_steps, batch_size, lr, seed, auxk_alpha,
                            dead_tokens, log_every, progress, curve, device).to("cpu")
    _check_finite_weights(kind, coder)
    train_s = time.perf_counter() - t0
    native_dir = out_dir / "native"
    coder.save_to_disk(native_dir)
    canonical_json_files(native_dir)
    native = SparseCoder.load_from_disk(native_dir, device="cpu")
    saved, trained = native.state_dict(), coder.state_dict()
    if saved.keys() != trained.keys() or not all(torch.equal(saved[n], trained[n]) for n in saved):
        raise RuntimeError(f"sparsify coder in {native_dir} does not reload identically")
    saelens_dir = out_dir / "saelens"
    convert_sparsify(native, hook_name, hook_name_out).save_model(saelens_dir)
    canonical_json_files(saelens_dir)
    if check_batch is None:
        check_batch = next(iter(batches()))
    check_x = check_batch if isinstance(check_batch, torch.Tensor) else check_batch[0]
    fidelity = check_encode_fidelity(native, load_saelens(saelens_dir), check_x)
    if not fidelity["passed"]:
        raise RuntimeError(f"sae-lens conversion of {native_dir} changes the encoding: {fidelity}")
    return TrainResult(curve, native_dir, saelens_dir, fidelity, model=coder, train_s=train_s)
