"""sae-lens format: the TopK transcoder classes, sparsify -> sae-lens conversion, loading, canonical files.

Every dictionary is stored as a sae-lens directory (``cfg.json`` + ``sae_weights.safetensors``) that
``load_saelens`` reads. ``convert_sparsify`` maps a sparsify ``SparseCoder`` onto sae-lens' ``TopKSAE`` (or the
TopK transcoders registered here); ``saeflow.dictionaries.fidelity`` checks every conversion.
"""

from __future__ import annotations

from pathlib import Path

_CLASSES: dict[str, tuple[type, type]] = {}


def register_saelens_classes() -> dict[str, tuple[type, type]]:
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
        """sae-lens ``Transcoder`` with sparsify's TopK activation (see ``register_saelens_classes``)."""

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    class TopKSkipTranscoder(SkipTranscoder):
        """sae-lens ``SkipTranscoder`` with sparsify's TopK activation (see ``register_saelens_classes``)."""

        def get_activation_fn(self):
            return TopK(self.cfg.k)

    for sae_cls, cfg_cls in ((TopKTranscoder, TopKTranscoderConfig),
                             (TopKSkipTranscoder, TopKSkipTranscoderConfig)):
        arch = cfg_cls.architecture()
        if arch not in SAE_CLASS_REGISTRY:  # another copy of this module may have registered it
            register_sae_class(arch, sae_cls, cfg_cls)
        _CLASSES[arch] = SAE_CLASS_REGISTRY[arch]
    return _CLASSES


def convert_sparsify(coder, hook_name: str, hook_name_out: str | None = None):
    """sae-lens module equivalent to a sparsify ``SparseCoder`` (CPU, float32).

    SAE (``transcode=False``): ``TopKSAE`` with W_enc = encoder.weight.T, b_enc = encoder.bias,
    W_dec, b_dec, k, ``apply_b_dec_to_input=True`` (sparsify encodes ``x - b_dec``) and
    ``rescale_acts_by_decoder_norm=False`` (sparsify selects on raw pre-activations).
    Transcoder: ``TopKSkipTranscoder`` / ``TopKTranscoder`` (see ``register_saelens_classes``), d_out = d_in,
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
        sae_cls, cfg_cls = register_saelens_classes()["topk_skip_transcoder" if coder.W_skip is not None
                                               else "topk_transcoder"]
        sae = sae_cls(cfg_cls(**common, d_out=coder.d_in, apply_b_dec_to_input=False,
                              metadata=SAEMetadata(hook_name=hook_name, hook_name_out=hook_name_out)))
        if coder.W_skip is not None:
            sd["W_skip"] = coder.W_skip
    sae.load_state_dict({n: t.detach().to(torch.float32).contiguous().clone() for n, t in sd.items()})
    return sae.eval()


def sparsify_hookpoint(hook_name: str, transcoder: bool = False) -> str:
    """sparsify's name of the site a dictionary reads (its `<hookpoint>/` folder; presets.md): a block's output
    `blocks.L.hook_resid_post` is `layers.L`, the MLP a transcoder maps (`blocks.L.ln2.hook_normalized` in) is
    `layers.L.mlp`; any other site keeps its TransformerLens name."""
    import re

    m = re.fullmatch(r"blocks\.(\d+)\.(hook_resid_post|ln2\.hook_normalized)", hook_name)
    if m and (m.group(2) == "ln2.hook_normalized") == transcoder:
        return f"layers.{m.group(1)}" + (".mlp" if transcoder else "")
    return hook_name


def write_metadata(folder: str | Path, metadata: dict) -> None:
    """Add ``metadata`` to the `metadata` of a sae-lens directory's cfg.json (what SAEBench, sae-dashboard and
    Neuronpedia read to use a dictionary without edits: model_name, hook_name, context_size, prepend_bos,
    dataset_path, ...), keeping what is there, and check that ``SAE.load_from_disk`` reads every field back."""
    import json

    path = Path(folder) / "cfg.json"
    cfg = json.loads(path.read_text())
    cfg["metadata"] = {**cfg.get("metadata", {}), **metadata}
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    got = load_saelens(folder).cfg.metadata
    wrong = [k for k, v in metadata.items() if getattr(got, k) != v]
    if wrong:
        raise RuntimeError(f"{path}: metadata {wrong} do not load back through SAE.load_from_disk")


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

    register_saelens_classes()
    return SAE.load_from_disk(str(path), device="cpu", dtype="float32").eval()
