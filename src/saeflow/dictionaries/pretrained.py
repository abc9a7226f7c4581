"""Pretrained dictionaries (sae-lens, sparsify, dictionary_learning) behind one interface.

A dictionary spec (``DictSource`` in the config) is a dict::

    {"format": "saelens" | "sparsify" | "dictionary_learning",
     "release": sae-lens release name (pretrained_saes.yaml) or a Hugging Face repo id,
     "id": template with "{layer}", e.g. "blocks.{layer}.hook_resid_post", "layer_{layer}/width_16k/canonical",
           "layers.{layer}", "resid_out_layer{layer}/10_32768",
     "revision": pinned commit / branch / tag, or None (the hub's "main"),
     "local_dir": a local snapshot of the repo, or None; when given nothing touches the network}

``load_native`` returns the object the format's own loader returns; ``to_saelens`` turns it into a
sae-lens SAE with the same encode/decode; ``load_pretrained`` does both, checks encode fidelity of the
saved-and-reloaded sae-lens copy against the native module on real activations, and leaves a
sae-lens directory that ``saeflow.dictionaries.formats.load_saelens`` reads. ``write_tiny`` writes tiny
dictionaries in each format's exact on-disk layout (for tests and offline presets).

What each loader reads (``<id>`` = ``spec["id"].format(layer=L)``):

- sae-lens, release in the registry: ``SAE.from_pretrained(release, <id>)``; the registry maps the id to
  a folder of its repo and names the converter (``conversion_func``): ``sae_lens`` reads
  ``<folder>/cfg.json`` + ``<folder>/sae_weights.safetensors`` (+ optional ``sparsity.safetensors``),
  ``gemma_2`` (Gemma Scope) reads ``<folder>/params.npz`` and derives the config from the repo id and
  folder name, etc. With ``local_dir`` the same call runs with every ``hf_hub_download`` of the converter
  answered from ``local_dir/<path in repo>`` (the files of a repo snapshot), so Gemma Scope's
  ``params.npz`` layout loads locally through its real converter; with ``revision`` the downloads are
  pinned to it. Registry config overrides (neuronpedia id, ...) and norm-scaling folding apply in every
  case, exactly as in a plain ``from_pretrained``.
- sae-lens, release not in the registry (a plain repo id such as ``chanind/sae-qwen2-0.5b-res``):
  hub -> ``SAE.from_pretrained(repo_id, <id>)`` (sae-lens layout ``<id>/cfg.json`` +
  ``<id>/sae_weights.safetensors``); local -> ``SAE.load_from_disk(local_dir/<id>)``.
- sparsify: ``<id>/cfg.json`` + ``<id>/sae.safetensors`` (``SparseCoder.save_to_disk``); hub ->
  ``SparseCoder.load_from_hub(release, hookpoint=<id>)`` (``snapshot_download`` of ``<id>/*``; with a
  revision: ``snapshot_download(..., revision=...)`` then ``SparseCoder.load_from_disk``), local ->
  ``SparseCoder.load_from_disk(local_dir/<id>)``.
- dictionary_learning: ``<id>/ae.pt`` (a ``torch.save``d state dict of ``AutoEncoder``: ``bias``,
  ``encoder.weight``, ``encoder.bias``, ``decoder.weight``) and optionally ``<id>/config.json``
  (``{"trainer": {...,"dict_class": "AutoEncoder"}, "buffer": {...}}``); read with
  ``torch.load(..., weights_only=True)`` only (a pickle that needs anything but tensors is refused) into
  ``DLAutoEncoder``, a copy of ``dictionary_learning.dictionary.AutoEncoder``'s forward math (the PyPI
  package pulls nnsight, wandb, umap-learn, ... and is not needed for one state dict).

Conversions (all to float32 on CPU):

- sae-lens: the SAE itself (the check compares it with its saved-and-reloaded copy).
- sparsify: ``saeflow.dictionaries.formats.convert_sparsify`` (TopKSAE, W_enc = encoder.weight.T, b_enc, W_dec, b_dec,
  k, apply_b_dec_to_input=True).
- dictionary_learning: StandardSAE (ReLU) with W_enc = encoder.weight.T [d_in, d_sae],
  b_enc = encoder.bias, W_dec = decoder.weight.T [d_sae, d_in], b_dec = bias, apply_b_dec_to_input=True:
  relu((x - b_dec) @ W_enc + b_enc) = relu(encoder(x - bias)) and f @ W_dec + b_dec = decoder(f) + bias.
  No decoder normalisation is applied (dictionary_learning's ``from_pretrained(normalize_decoder=True)``
  would rescale latents by the decoder norms; the stored weights are used as they are).

No Snakemake import; torch, sae_lens, sparsify and huggingface_hub are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
from pathlib import Path
from typing import Any, Iterator

FORMATS = ("saelens", "sparsify", "dictionary_learning")


SPEC_KEYS = ("format", "release", "id", "revision", "local_dir")


SAELENS_ARCHITECTURES = ("topk", "jumprelu", "standard")


DL_WEIGHTS = "ae.pt"


DL_CONFIG = "config.json"


DL_KEYS = ("bias", "encoder.weight", "encoder.bias", "decoder.weight")


_DOWNLOAD_LOCK = threading.Lock()


def validate_spec(spec: dict) -> dict:
    """The spec with defaults filled in (revision/local_dir None); ValueError on anything malformed.

    Unknown keys are refused (a misspelt "revison" would silently unpin a download).
    """
    if not isinstance(spec, dict):
        raise ValueError(f"a dictionary spec must be a dict; got {type(spec).__name__}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        raise ValueError(f"unknown dictionary spec keys {unknown}; allowed: {list(SPEC_KEYS)}")
    out = {"revision": None, "local_dir": None, **spec}
    if out.get("format") not in FORMATS:
        raise ValueError(f"spec format must be one of {FORMATS}; got {out.get('format')!r}")
    for key in ("release", "id"):
        if not isinstance(out.get(key), str) or not out[key].strip():
            raise ValueError(f"spec {key!r} must be a non-empty string; got {out.get(key)!r}")
    if out["revision"] is not None and (not isinstance(out["revision"], str) or not out["revision"]):
        raise ValueError(f"spec revision must be a non-empty string or None; got {out['revision']!r}")
    if out["local_dir"] is not None:
        if not isinstance(out["local_dir"], (str, Path)) or not str(out["local_dir"]):
            raise ValueError(f"spec local_dir must be a path or None; got {out['local_dir']!r}")
        out["local_dir"] = str(out["local_dir"])
    return out


def dict_id(spec: dict, layer: int) -> str:
    """``spec["id"]`` with ``{layer}`` filled in (a template without it is used as it is)."""
    try:
        return spec["id"].format(layer=layer)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"spec id {spec['id']!r} must be a template with only '{{layer}}': {e}") from None


def _describe_spec(spec: dict, layer: int) -> str:
    s = validate_spec(spec)
    where = f"local_dir={s['local_dir']}" if s["local_dir"] else f"revision={s['revision'] or 'main'}"
    return f"{s['format']} {s['release']!r} id {dict_id(s, layer)!r} (layer {layer}, {where})"


def _dl_autoencoder_class():
    import torch
    from torch import nn

    class DLAutoEncoder(nn.Module):
        """``dictionary_learning.dictionary.AutoEncoder`` (v0.1.0), same parameter names and math.

        encode(x) = relu(encoder(x - bias)); decode(f) = decoder(f) + bias; forward(x) = decode(encode(x)).
        Deliberately no ``num_latents`` attribute: ``saeflow.dictionaries.training`` treats modules with
        ``encoder`` + ``num_latents`` as sparsify coders.
        """

        def __init__(self, activation_dim: int, dict_size: int):
            super().__init__()
            self.activation_dim = activation_dim
            self.dict_size = dict_size
            self.bias = nn.Parameter(torch.zeros(activation_dim))
            self.encoder = nn.Linear(activation_dim, dict_size, bias=True)
            self.decoder = nn.Linear(dict_size, activation_dim, bias=False)

        def encode(self, x):
            return torch.relu(self.encoder(x - self.bias))

        def decode(self, f):
            return self.decoder(f) + self.bias

        def forward(self, x):
            return self.decode(self.encode(x))

    return DLAutoEncoder


_DL_CLASS: list = []


def dl_autoencoder(activation_dim: int, dict_size: int):
    """A new ``DLAutoEncoder`` (see ``_dl_autoencoder_class``)."""
    if not _DL_CLASS:
        _DL_CLASS.append(_dl_autoencoder_class())
    return _DL_CLASS[0](activation_dim, dict_size)


def is_dl_autoencoder(module) -> bool:
    return bool(_DL_CLASS) and isinstance(module, _DL_CLASS[0])


def load_dl_state_dict(path: str | Path, device: str = "cpu"):
    """dictionary_learning ``ae.pt`` -> ``DLAutoEncoder``. Only ``torch.load(weights_only=True)``: a file that
    needs more than tensors to unpickle raises ``pickle.UnpicklingError`` and runs none of its code."""
    import torch

    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    if set(sd) != set(DL_KEYS):
        raise ValueError(f"{path}: a dictionary_learning AutoEncoder state dict has keys {sorted(DL_KEYS)}; "
                         f"got {sorted(sd)} (other dictionary classes are not supported)")
    d_sae, d_in = sd["encoder.weight"].shape
    expect = {"bias": (d_in,), "encoder.bias": (d_sae,), "decoder.weight": (d_in, d_sae)}
    bad = {k: tuple(sd[k].shape) for k, s in expect.items() if tuple(sd[k].shape) != s}
    if bad:
        raise ValueError(f"{path}: inconsistent shapes {bad} for encoder.weight {(d_sae, d_in)}")
    ae = dl_autoencoder(d_in, d_sae)
    ae.load_state_dict(sd)
    return ae.to(device).eval()


def _check_dl_config(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    cfg = json.loads(path.read_text())
    dict_class = (cfg.get("trainer") or cfg.get("dictionary") or {}).get("dict_class")
    if dict_class not in (None, "AutoEncoder"):
        raise NotImplementedError(f"{path}: dict_class {dict_class!r}; only dictionary_learning's AutoEncoder "
                                  "(ReLU SAE) is supported")
    return cfg


@contextlib.contextmanager
def _saelens_downloads(local_dir: str | None, revision: str | None, snapshot_of: str) -> Iterator[None]:
    """Redirect the ``hf_hub_download`` calls of sae-lens' converters (``pretrained_sae_loaders``).

    local_dir: every requested ``[subfolder/]filename`` of ``repo_id`` is answered from local_dir (missing
    -> ``LocalEntryNotFoundError``, which the converters treat as an absent optional file); other repos are
    refused. revision: downloads are pinned to it. Process-global while active (serialised by a lock).
    Covers every converter that fetches through ``hf_hub_download`` (sae_lens, gemma_2, sparsify,
    dictionary_learning_1, llama_scope, ...); one that calls the hub API directly (e.g. the CLT loader's
    safetensors-header request) is not redirected.
    """
    import sae_lens.loading.pretrained_sae_loaders as loaders
    from huggingface_hub.errors import LocalEntryNotFoundError

    real = loaders.hf_hub_download
    pinned = revision

    def download(repo_id: str, filename: str, *, subfolder: str | None = None, revision: str | None = None,
                 **kw: Any) -> str:
        if local_dir is not None:
            if repo_id != snapshot_of:
                raise LocalEntryNotFoundError(f"local_dir {local_dir} is a snapshot of {snapshot_of}; "
                                              f"the converter asked for {repo_id}")
            rel = Path(subfolder or "") / filename
            path = (Path(local_dir) / rel).resolve()
            if Path(local_dir).resolve() not in path.parents:
                raise LocalEntryNotFoundError(f"{rel} is outside local_dir {local_dir}")
            if not path.is_file():
                raise LocalEntryNotFoundError(f"{rel} not found in local_dir {local_dir}")
            return str(path)
        if revision is not None and revision != pinned:
            raise ValueError(f"converter asked for revision {revision!r}; the spec pins {pinned!r}")
        return real(repo_id, filename, subfolder=subfolder, revision=pinned, **kw)

    with _DOWNLOAD_LOCK:
        loaders.hf_hub_download = download
        try:
            yield
        finally:
            loaders.hf_hub_download = real


def _load_saelens_native(spec: dict, sae_id: str, device: str):
    from sae_lens import SAE
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saeflow.dictionaries.formats import register_saelens_classes

    register_saelens_classes()
    release, local_dir, revision = spec["release"], spec["local_dir"], spec["revision"]
    registry = get_pretrained_saes_directory()
    if release in registry:
        repo_id = registry[release].repo_id
    elif local_dir is not None:
        path = Path(local_dir) / sae_id
        if not (path / "cfg.json").is_file():
            raise FileNotFoundError(f"{path}/cfg.json not found: for a release that is not in sae-lens' "
                                    "registry, local_dir must hold <id>/cfg.json + sae_weights.safetensors")
        return SAE.load_from_disk(str(path), device=device, dtype="float32").eval()
    elif "/" in release:
        repo_id = release
    else:
        raise ValueError(f"sae-lens release {release!r} is neither in sae-lens' pretrained_saes.yaml "
                         "nor a Hugging Face repo id")
    if local_dir is None and revision is None:
        return SAE.from_pretrained(release, sae_id, device=device).eval()
    with _saelens_downloads(local_dir, revision, repo_id):
        return SAE.from_pretrained(release, sae_id, device=device).eval()


def _load_sparsify_native(spec: dict, sae_id: str, device: str):
    from sparsify import SparseCoder

    if spec["local_dir"] is not None:
        return SparseCoder.load_from_disk(Path(spec["local_dir"]) / sae_id, device=device).eval()
    if spec["revision"] is None:
        return SparseCoder.load_from_hub(spec["release"], hookpoint=sae_id, device=device).eval()
    from huggingface_hub import snapshot_download

    root = snapshot_download(spec["release"], revision=spec["revision"], allow_patterns=f"{sae_id}/*")
    return SparseCoder.load_from_disk(Path(root) / sae_id, device=device).eval()


def _load_dl_native(spec: dict, sae_id: str, device: str):
    if spec["local_dir"] is not None:
        folder = Path(spec["local_dir"]) / sae_id
        weights, config = folder / DL_WEIGHTS, folder / DL_CONFIG
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        kw = dict(repo_id=spec["release"], revision=spec["revision"])
        weights = Path(hf_hub_download(filename=f"{sae_id}/{DL_WEIGHTS}", **kw))
        try:
            config = Path(hf_hub_download(filename=f"{sae_id}/{DL_CONFIG}", **kw))
        except EntryNotFoundError:  # optional (LocalEntryNotFoundError offline is a subclass)
            config = None
    _check_dl_config(config)
    return load_dl_state_dict(weights, device=device)


def load_native(spec: dict, layer: int, device: str = "cpu"):
    """The dictionary as its own format's loader returns it (see the module docstring for what is read).

    saelens -> ``sae_lens.SAE`` (float32, eval); sparsify -> ``sparsify.SparseCoder`` (stored dtype, eval);
    dictionary_learning -> ``DLAutoEncoder`` (stored dtype, eval).
    """
    spec = validate_spec(spec)
    sae_id = dict_id(spec, layer)
    loader = {"saelens": _load_saelens_native, "sparsify": _load_sparsify_native,
              "dictionary_learning": _load_dl_native}[spec["format"]]
    return loader(spec, sae_id, device)


def to_saelens(native, spec: dict, hook_name: str | None):
    """A sae-lens SAE with the same encode/decode as ``native`` (float32, CPU for converted formats).

    saelens: ``native`` itself; if ``hook_name`` is given and the SAE names a different hook, ValueError
    (a dictionary read at the wrong site); an SAE without a hook name gets ``hook_name``.
    sparsify: ``saeflow.dictionaries.formats.convert_sparsify`` (TopK SAE, b_dec shift kept).
    dictionary_learning: StandardSAE, W_enc = encoder.weight.T, b_enc = encoder.bias, W_dec = decoder.weight.T,
    b_dec = bias, apply_b_dec_to_input=True.
    """
    import torch

    fmt = validate_spec(spec)["format"]
    if fmt == "saelens":
        own = native.cfg.metadata.hook_name
        if hook_name is not None and own is not None and own != hook_name:
            raise ValueError(f"the SAE was trained on hook {own!r}, not {hook_name!r}")
        if own is None:
            native.cfg.metadata.hook_name = hook_name
        return native
    if hook_name is None:
        raise ValueError(f"hook_name is required to convert a {fmt} dictionary")
    if fmt == "sparsify":
        from saeflow.dictionaries.formats import convert_sparsify

        return convert_sparsify(native, hook_name)
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    sae = StandardSAE(StandardSAEConfig(d_in=native.activation_dim, d_sae=native.dict_size, dtype="float32",
                                        device="cpu", apply_b_dec_to_input=True,
                                        metadata=SAEMetadata(hook_name=hook_name)))
    sd = {"W_enc": native.encoder.weight.T, "b_enc": native.encoder.bias, "W_dec": native.decoder.weight.T,
          "b_dec": native.bias}
    sae.load_state_dict({n: t.detach().to("cpu", torch.float32).contiguous().clone() for n, t in sd.items()})
    return sae.eval()


def describe(module) -> dict:
    """Interface facts of a sae-lens SAE, sparsify coder or ``DLAutoEncoder``.

    {"d_in", "d_sae", "hook_name" (None when the module does not record one), "architecture" (sae-lens name:
    "topk", "jumprelu", "standard", ...), "apply_b_dec_to_input", "dtype"} plus "k" (TopK),
    "rescale_acts_by_decoder_norm" (sae-lens TopK), "normalize_activations" (sae-lens), and for JumpReLU
    "threshold": {"min", "mean", "max"} over latents.
    """
    from saeflow.dictionaries.codes import is_sparsify

    if is_sparsify(module):
        return {"d_in": int(module.d_in), "d_sae": int(module.num_latents), "hook_name": None,
                "architecture": "topk" if module.cfg.activation == "topk" else module.cfg.activation,
                "k": int(module.cfg.k), "apply_b_dec_to_input": not module.cfg.transcode,
                "transcode": bool(module.cfg.transcode), "dtype": str(module.dtype).removeprefix("torch.")}
    if is_dl_autoencoder(module):
        return {"d_in": int(module.activation_dim), "d_sae": int(module.dict_size), "hook_name": None,
                "architecture": "standard", "apply_b_dec_to_input": True,
                "dtype": str(module.encoder.weight.dtype).removeprefix("torch.")}
    cfg = module.cfg
    out = {"d_in": int(cfg.d_in), "d_sae": int(cfg.d_sae), "hook_name": cfg.metadata.hook_name,
           "architecture": cfg.architecture(), "apply_b_dec_to_input": bool(cfg.apply_b_dec_to_input),
           "normalize_activations": cfg.normalize_activations, "dtype": str(cfg.dtype).removeprefix("torch.")}
    for key in ("k", "rescale_acts_by_decoder_norm"):
        if hasattr(cfg, key):
            out[key] = getattr(cfg, key)
    if getattr(cfg, "metadata", None) is not None and cfg.metadata.get("neuronpedia_id") is not None:
        out["neuronpedia_id"] = cfg.metadata.get("neuronpedia_id")
    threshold = getattr(module, "threshold", None)
    if out["architecture"] == "jumprelu" and threshold is not None:
        t = threshold.detach().float()
        out["threshold"] = {"min": t.min().item(), "mean": t.mean().item(), "max": t.max().item()}
    return out


def load_pretrained(spec: dict, layer: int, hook_name: str, x, out_dir: str | Path, device: str = "cpu") -> dict:
    """Load, convert, save in sae-lens format under ``out_dir/"saelens"``, and check encode fidelity.

    x: real activations [n, d_in] of ``hook_name``. The native module (cast to float32, CPU) is compared
    by ``saeflow.dictionaries.fidelity.check_encode_fidelity`` with the saved directory reloaded by
    ``saeflow.dictionaries.formats.load_saelens`` (for sae-lens: a save/reload round trip; otherwise the conversion
    too). A failed check removes the saved directory and raises RuntimeError naming the spec and numbers.
    Returns {"fidelity": check result, "describe": describe(reloaded), "native": describe(native),
    "saelens_dir": Path}.
    """
    import torch

    from saeflow.dictionaries.fidelity import check_encode_fidelity
    from saeflow.dictionaries.formats import canonical_json_files, load_saelens

    spec = validate_spec(spec)
    what = _describe_spec(spec, layer)
    native = load_native(spec, layer, device=device)
    native_facts = describe(native)
    x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != native_facts["d_in"]:
        raise ValueError(f"x must be [n, d_in={native_facts['d_in']}] activations for {what}; got {tuple(x.shape)}")
    native = native.to(device="cpu", dtype=torch.float32).eval()
    converted = to_saelens(native, spec, hook_name)
    saelens_dir = Path(out_dir) / "saelens"
    if saelens_dir.exists():
        shutil.rmtree(saelens_dir)
    converted.save_model(saelens_dir)
    canonical_json_files(saelens_dir)
    reloaded = load_saelens(saelens_dir)
    fidelity = check_encode_fidelity(native, reloaded, x.to("cpu"))
    if not fidelity["passed"]:
        shutil.rmtree(saelens_dir, ignore_errors=True)
        raise RuntimeError(f"sae-lens copy of {what} does not encode like the native dictionary: "
                           f"jaccard_min={fidelity['jaccard_min']:.4f}, identical_active_frac="
                           f"{fidelity['identical_active_frac']:.4f}, {fidelity['n_differing_tokens']} tokens differ "
                           f"beyond a tie ({fidelity['n_tied_tokens']} ties), max_abs_latent_diff="
                           f"{fidelity['max_abs_latent_diff']:.3g}, rel_recon_diff={fidelity['rel_recon_diff']:.3g} "
                           f"on {fidelity['n_tokens']} tokens")
    return {"fidelity": fidelity, "describe": describe(reloaded), "native": native_facts,
            "saelens_dir": saelens_dir}
