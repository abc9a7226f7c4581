"""Hugging Face language models through TransformerLens: the paper-scale presets, and tiny random stand-ins.

A model spec (from the config) names one pinned Hugging Face model and how TransformerLens loads it::

    {"hf_id": "google/gemma-2-2b",       # Hugging Face repo id
     "revision": "<commit sha>",          # pinned commit (a branch such as "main" is refused for the hub)
     "local_dir": None | "<dir>",         # a save_pretrained directory (config.json, weights, tokenizer files)
                                          #   used instead of the hub when given; nothing then touches the network
     "tl_name": None | "google/gemma-2-2b",  # TransformerLens official name (or alias) selecting the
                                          #   architecture conversion; None -> hf_id
     "processing": "none" | "default",    # "none": HookedTransformer.from_pretrained_no_processing;
                                          #   "default": from_pretrained (fold LN, centre writing weights and
                                          #   unembed, fold value biases)
     "dtype": "float32" | "bfloat16" | "float16",
     "prepend_bos": True,                 # windows start with the BOS token (``bos_id``)
     "n_layers": 26, "d_model": 2304}     # checked against the loaded model

Which processing each dictionary release expects (sae-lens 6.54.12 ``pretrained_saes.yaml`` and its loaders;
sae-lens loads every release's model with ``HookedTransformer.from_pretrained_no_processing(**cfg.metadata.
model_from_pretrained_kwargs)``, and its trainer's default for HookedTransformer is
``{"center_writing_weights": False}`` on top of no processing):

==================================  ==============================================  ===========
release                             model_from_pretrained_kwargs                     processing
==================================  ==============================================  ===========
gpt2-small-resid-post-v5-32k        none (yaml: only ``dataset_path`` overridden)    "none"
gpt2-small-res-jb                   ``{"center_writing_weights": True}`` (yaml)      "default" (*)
chanind/sae-qwen2-0.5b-res          not in the yaml: loaded as a plain HF repo, the  "none" (**)
chanind/sae-llama-3.2-1b-res        kwargs live in each SAE's cfg.json (trained by   "none" (**)
                                    sae-lens: default = no processing)
gemma-scope-2b-pt-res-canonical     none (``get_gemma_2_config_from_hf`` sets no     "none"
                                    kwargs; Gemma Scope was trained on raw activations)
pythia-70m-deduped-res-sm           none (yaml has no overrides; pre-6.0 cfg)        "none"
saprmarks dictionary_learning       (not sae-lens: trained on raw HF activations)    "none"
EleutherAI/sae-llama-3-8b-32x       (sparsify: raw HF hidden states)                 "none"
==================================  ==============================================  ===========

(*) "default" = no processing + fold_ln + center_writing_weights + center_unembed + fold_value_biases. Of
these only center_writing_weights changes the residual stream (fold_ln rewrites the LayerNorm weights into
the next layer, center_unembed shifts logits by a constant, fold_value_biases moves b_V into b_O; none of
them changes ``hook_resid_pre/mid/post``), so "default" reproduces the residual stream the res-jb SAEs were
trained on. Hooks inside the blocks (``ln*.hook_normalized``, ``attn.hook_z``) do differ.
(**) not checkable offline: the pipeline must compare ``sae.cfg.metadata.model_from_pretrained_kwargs`` with
the preset's processing when it loads the SAE (``processing_for_saelens_kwargs``).

How TransformerLens is made to load a local (or pinned) model, offline. ``HookedTransformer.from_pretrained``
takes ``hf_model=`` (weights) and ``tokenizer=``, but builds its *config* by name: TL 3.9.0's
``loading_from_pretrained.convert_hf_model_config(official_name)`` calls
``AutoConfig.from_pretrained(official_name)`` (a hub request, at the *unpinned* main revision) for GPT-2,
GPT-NeoX, Qwen2 and Qwen3, and hard-codes the whole config by name for Llama-3.x and Gemma-2 (so a tiny Llama saved
locally would be built with the real 2048-wide shapes). ``hf_model.config`` reaches it only as ``hf_cfg``,
from which TL takes nothing but ``vocab_size`` (and Qwen2's rope theta); a local path as the model name is
refused by ``from_pretrained`` (``get_official_model_name``). So ``load_hooked`` calls ``from_pretrained``
unchanged, inside ``_pinned_tl_config``: for the duration of the call, TL's ``AutoConfig`` resolves the
official name to the pinned config actually loaded (any other name raises), and the shape fields TL hard-codes
by name are recomputed from that config (``tl_overrides``: for the real paper models these equal TL's own
values, which the tests check on the real configs, so they change nothing there). The tokenizer is passed
already loaded with ``add_bos_token=True`` where it has a BOS token, so TL does not re-load it by name. Hence
the paper presets and the tiny random models go through exactly the same function.

BOS and windows (``bos_id``). Eval windows are ``[bos] + T-1 text tokens``; recon and influence drop
position 0 (``exclude_bos=True``), as everywhere else in saeflow. Per family:

- GPT-2: BOS = EOS = ``<|endoftext|>`` (50256); TL prepends it by default.
- GPT-NeoX / Pythia: BOS = EOS = ``<|endoftext|>`` (0); TL's default is *not* to prepend (cfg
  ``default_prepend_bos=False``); with ``prepend_bos`` we prepend it.
- Llama-3: ``<|begin_of_text|>`` (128000), added by the tokenizer itself.
- Gemma-2: ``<bos>`` (2), added by the tokenizer itself; sae-lens' Gemma Scope config has prepend_bos True.
- Qwen2 and Qwen3: the tokenizer has **no** BOS token. TL sets ``tokenizer.bos_token = eos_token``
  (``<|endoftext|>``, 151643) and does not prepend by default; sae-lens with ``prepend_bos=True`` (its
  default) then prepends that token. We do the same: ``bos_id`` returns the EOS id for a tokenizer without
  BOS, so position 0 is ``<|endoftext|>`` (Qwen2's document separator). The Qwen3 Instruct tokenizers'
  EOS is ``<|im_end|>`` (151645, as the tiny Qwen3 stand-in has it), so their windows, and chat-wrapped
  steering prompts, start with ``<|im_end|>``: the token TL and sae-lens would prepend too.
``spec["prepend_bos"]`` is also TL's ``default_prepend_bos``, so ``model.to_tokens`` agrees with our windows.
With ``prepend_bos`` False ``bos_id`` is None and windows are text only (position 0 is still excluded).

Hook convention: sparsify's ``layers.N`` output = TL ``blocks.N.hook_resid_post`` = HF
``output_hidden_states[N + 1]`` for every N but the last, where HF applies the final norm.

Family caveats: Gemma-2 soft-caps attention scores (tanh, 50) and final logits (30), alternates sliding-window
(4096, even layers) and global attention, scales embeddings by sqrt(d_model) (folded into TL's W_E) and uses
``1 + w`` RMSNorm weights and post-sublayer norms; transformers' Gemma2 has ``_supports_sdpa = False`` (sdpa
cannot soft-cap), so HF references use eager attention. Qwen2-0.5B's n_ctx is its max_position_embeddings
(TL builds masks and rotary tables lazily, so that costs nothing).
Llama-3.2 uses llama3 ("NTK-by-parts") rope scaling; TL caps its n_ctx at 2048 (``influence`` refuses longer
windows). Qwen2 has q/k/v biases and tied embeddings. Qwen3 has no q/k/v biases but RMS-normalises each
query and key head (TL ``use_qk_norm``), GQA, head_dim 128 (not d_model / n_heads) and, for the 4B model,
tied embeddings; TL sets its n_ctx to 2048. TL 3.9 names Qwen3-4B but not Qwen3-4B-Instruct-2507 (same
architecture and shapes): the qwen3-4b preset loads the Instruct weights through the Qwen/Qwen3-4B conversion. Pythia uses parallel attention/MLP and rotary on 25%
of each head.

torch, transformers and transformer_lens are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import threading
from pathlib import Path

FAMILIES = ("gpt2", "gpt-neox", "llama", "qwen2", "qwen3", "gemma2")


PROCESSING = ("none", "default")


DTYPES = ("float32", "bfloat16", "float16")


SPEC_KEYS = ("hf_id", "revision", "local_dir", "tl_name", "processing", "dtype", "prepend_bos", "n_layers",
             "d_model")


OPTIONAL_KEYS = ("local_dir", "tl_name")


# The paper-scale presets (presets.md). Revisions come from the config (pinned commits).
PAPER_MODELS = {
    "pythia-70m": {"family": "gpt-neox", "hf_id": "EleutherAI/pythia-70m-deduped",
                   "tl_name": "EleutherAI/pythia-70m-deduped", "n_layers": 6, "d_model": 512, "processing": "none"},
    "gpt2-small": {"family": "gpt2", "hf_id": "openai-community/gpt2", "tl_name": "gpt2", "n_layers": 12,
                   "d_model": 768, "processing": "none"},  # "default" for gpt2-small-res-jb
    "qwen2-0.5b": {"family": "qwen2", "hf_id": "Qwen/Qwen2-0.5B", "tl_name": "Qwen/Qwen2-0.5B", "n_layers": 24,
                   "d_model": 896, "processing": "none"},
    # TL 3.9 has no Instruct-2507 name: its Qwen/Qwen3-4B conversion (same architecture and shapes) loads it.
    "qwen3-4b": {"family": "qwen3", "hf_id": "Qwen/Qwen3-4B-Instruct-2507", "tl_name": "Qwen/Qwen3-4B",
                 "n_layers": 36, "d_model": 2560, "processing": "none"},
    "llama-3.2-1b": {"family": "llama", "hf_id": "unsloth/Llama-3.2-1B", "tl_name": "meta-llama/Llama-3.2-1B",
                     "n_layers": 16, "d_model": 2048, "processing": "none"},
    "gemma-2-2b": {"family": "gemma2", "hf_id": "google/gemma-2-2b", "tl_name": "google/gemma-2-2b",
                   "n_layers": 26, "d_model": 2304, "processing": "none"},
    "llama-3-8b": {"family": "llama", "hf_id": "meta-llama/Meta-Llama-3-8B", "tl_name": "meta-llama/Meta-Llama-3-8B",
                   "n_layers": 32, "d_model": 4096, "processing": "none"},
}


# TransformerLens official name of the paper model of each family (random models borrow its conversion).
FAMILY_TL_NAME = {"gpt2": "gpt2", "gpt-neox": "EleutherAI/pythia-70m-deduped", "llama": "meta-llama/Llama-3.2-1B",
                  "qwen2": "Qwen/Qwen2-0.5B", "qwen3": "Qwen/Qwen3-4B", "gemma2": "google/gemma-2-2b"}


SAELENS_PROCESSING = {
    "gpt2-small-resid-post-v5-32k": "none", "gpt2-small-res-jb": "default", "chanind/sae-qwen2-0.5b-res": "none",
    "chanind/sae-llama-3.2-1b-res": "none", "gemma-scope-2b-pt-res-canonical": "none",
    "pythia-70m-deduped-res-sm": "none",
}


_HEX40 = re.compile(r"^[0-9a-f]{40}$")


_TL_LOCK = threading.Lock()


def check_spec(spec: dict) -> dict:
    """Validate a model spec; return a normalised copy (tl_name defaulted to hf_id, local_dir a str or None).

    Raises ValueError naming the offending key."""
    if not isinstance(spec, dict):
        raise ValueError(f"model spec must be a dict with keys {', '.join(SPEC_KEYS)}; got {type(spec).__name__}")
    missing = [k for k in SPEC_KEYS if k not in spec and k not in OPTIONAL_KEYS]
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if missing or unknown:
        raise ValueError(f"model spec: missing keys {missing}, unknown keys {unknown}; keys: {', '.join(SPEC_KEYS)}")
    s = {k: spec.get(k) for k in SPEC_KEYS}
    if not isinstance(s["hf_id"], str) or not s["hf_id"].strip():
        raise ValueError(f"model spec key 'hf_id' must be a non-empty string; got {s['hf_id']!r}")
    if not isinstance(s["revision"], str) or not s["revision"].strip() or \
            s["revision"].lower() in ("main", "master", "head"):
        raise ValueError(f"model spec key 'revision' must be a pinned commit (not a branch); got {s['revision']!r}")
    if s["local_dir"] is None and not _HEX40.match(s["revision"]):
        raise ValueError(f"model spec key 'revision' must be a 40-hex commit sha when loading {s['hf_id']!r} from "
                         f"the hub (local_dir is None); got {s['revision']!r}")
    if s["local_dir"] is not None:
        if not isinstance(s["local_dir"], (str, Path)) or not str(s["local_dir"]):
            raise ValueError(f"model spec key 'local_dir' must be a path or null; got {s['local_dir']!r}")
        s["local_dir"] = str(s["local_dir"])
    s["tl_name"] = s["tl_name"] or s["hf_id"]
    if not isinstance(s["tl_name"], str):
        raise ValueError(f"model spec key 'tl_name' must be a string or null; got {s['tl_name']!r}")
    if s["processing"] not in PROCESSING:
        raise ValueError(f"model spec key 'processing' must be one of {', '.join(PROCESSING)}; got {s['processing']!r}")
    if s["dtype"] not in DTYPES:
        raise ValueError(f"model spec key 'dtype' must be one of {', '.join(DTYPES)}; got {s['dtype']!r}")
    if not isinstance(s["prepend_bos"], bool):
        raise ValueError(f"model spec key 'prepend_bos' must be true or false; got {s['prepend_bos']!r}")
    for k in ("n_layers", "d_model"):
        if not isinstance(s[k], int) or isinstance(s[k], bool) or s[k] < 1:
            raise ValueError(f"model spec key {k!r} must be a positive integer; got {s[k]!r}")
    return s


def official_tl_name(spec: dict) -> str:
    """The TransformerLens official name for ``spec["tl_name"]`` (aliases resolved); ValueError if unknown."""
    from transformer_lens.loading_from_pretrained import get_official_model_name

    s = check_spec(spec)
    try:
        return get_official_model_name(s["tl_name"])
    except ValueError:
        raise ValueError(f"model spec key 'tl_name' = {s['tl_name']!r} is not a TransformerLens official model name "
                         f"or alias (set tl_name, e.g. 'gpt2' for openai-community/gpt2, "
                         f"'meta-llama/Llama-3.2-1B' for unsloth/Llama-3.2-1B)") from None


def processing_for_saelens_kwargs(model_from_pretrained_kwargs: dict | None) -> str:
    """The spec ``processing`` equivalent, on the residual stream, to sae-lens'
    ``from_pretrained_no_processing(**model_from_pretrained_kwargs)``; ValueError when neither is."""
    kw = {k: v for k, v in (model_from_pretrained_kwargs or {}).items()
          if k not in ("n_devices", "device", "dtype", "torch_dtype", "move_to_device", "default_padding_side")}
    # Of TL's processing flags only center_writing_weights changes hook_resid_* (module docstring).
    flags = ("center_writing_weights", "fold_ln", "center_unembed", "fold_value_biases",
             "refactor_factored_attn_matrices")
    other = sorted(set(kw) - set(flags))
    if other:
        raise ValueError(f"model_from_pretrained_kwargs {other} have no saeflow processing equivalent")
    return "default" if kw.get("center_writing_weights") else "none"


def _source(s: dict) -> tuple[str, dict]:
    """(name_or_path, kwargs) for transformers' from_pretrained."""
    if s["local_dir"] is not None:
        if not (Path(s["local_dir"]) / "config.json").is_file():
            raise ValueError(f"model spec key 'local_dir' = {s['local_dir']!r} is not a save_pretrained directory "
                             f"(no config.json)")
        return s["local_dir"], {"local_files_only": True}
    return s["hf_id"], {"revision": s["revision"]}


def _hub_error(s: dict, what: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"could not load the {what} of {s['hf_id']!r} at revision {s['revision']!r} from the Hugging Face hub "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Without network access (run "
        f"with HF_HUB_OFFLINE=1 to fail at once instead of retrying), set the model spec's 'local_dir' to a "
        f"save_pretrained directory (config.json, weights, tokenizer files) of that revision.")


def load_tokenizer(spec: dict, **kwargs):
    """The model's transformers tokenizer: from ``local_dir`` or the hub at the pinned revision.

    kwargs go to ``AutoTokenizer.from_pretrained`` (``load_hooked`` passes ``add_bos_token=True``)."""
    from transformers import AutoTokenizer

    s = check_spec(spec)
    src, kw = _source(s)
    try:
        return AutoTokenizer.from_pretrained(src, **kw, **kwargs)
    except OSError as e:
        if s["local_dir"] is None:
            raise _hub_error(s, "tokenizer", e) from e
        raise


def save_tokenizer(spec: dict, out_dir: str | Path) -> Path:
    """Save the spec's tokenizer with ``save_pretrained`` into ``out_dir`` (reload with ``AutoTokenizer``)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_tokenizer(spec).save_pretrained(str(out_dir))
    return out_dir


def bos_id(spec: dict, tokenizer) -> int | None:
    """Token id at position 0 of every window: the tokenizer's BOS, or its EOS when it has no BOS (Qwen2/3, as
    TransformerLens and sae-lens do); None when ``spec["prepend_bos"]`` is false."""
    if not check_spec(spec)["prepend_bos"]:
        return None
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return int(tid)
    raise ValueError(f"tokenizer of {spec['hf_id']!r} has neither a BOS nor an EOS token; set prepend_bos: false")


def model_facts(local_dir: str | Path) -> dict:
    """{n_layers, d_model, d_vocab, architecture} read from ``local_dir/config.json`` only."""
    path = Path(local_dir) / "config.json"
    if not path.is_file():
        raise ValueError(f"{local_dir} has no config.json (not a save_pretrained directory)")
    try:
        return model_facts_from_dict(json.loads(path.read_text()))
    except (KeyError, StopIteration, TypeError, ValueError) as e:
        raise ValueError(f"{path}: cannot read n_layers/d_model/vocab_size ({e!r})") from None


def model_facts_from_dict(raw: dict) -> dict:
    """``model_facts`` of a config dict (``config.json`` contents or ``PretrainedConfig.to_dict()``)."""
    c = raw.get("text_config") or raw
    nl = next(c[k] for k in ("num_hidden_layers", "n_layer", "num_layers") if c.get(k) is not None)
    dm = next(c[k] for k in ("hidden_size", "n_embd", "d_model") if c.get(k) is not None)
    return {"n_layers": int(nl), "d_model": int(dm), "d_vocab": int(c["vocab_size"]),
            "architecture": (raw.get("architectures") or [None])[0]}


def _rope(hf_config) -> dict:
    rp = getattr(hf_config, "rope_parameters", None) or getattr(hf_config, "rope_scaling", None) or {}
    theta = getattr(hf_config, "rope_theta", None) or rp.get("rope_theta", 10000.0)
    return {**rp, "rope_theta": theta}


def tl_overrides(hf_config) -> dict:
    """HookedTransformerConfig fields that TL 3.9.0 hard-codes by model name (Llama-3.x, Gemma-2), computed
    from the HF config instead; {} for families whose TL config is read from the HF config (GPT-2, NeoX, Qwen2, Qwen3).
    For the real paper models every value equals TL's own (tested), so applying them changes nothing there."""
    mt = hf_config.model_type
    if mt not in ("llama", "gemma2"):
        return {}
    n_heads, kv = hf_config.num_attention_heads, hf_config.num_key_value_heads
    d_head = getattr(hf_config, "head_dim", None) or hf_config.hidden_size // n_heads
    rope = _rope(hf_config)
    out = {"d_model": hf_config.hidden_size, "d_head": d_head, "n_heads": n_heads, "d_mlp": hf_config.intermediate_size,
           "n_layers": hf_config.num_hidden_layers, "d_vocab": hf_config.vocab_size, "eps": hf_config.rms_norm_eps,
           "rotary_base": float(rope["rope_theta"])}
    if mt == "llama":
        out.update({"n_key_value_heads": kv if kv != n_heads else None, "rotary_dim": d_head,
                    "act_fn": hf_config.hidden_act})
        if str(rope.get("rope_type") or rope.get("type") or "").lower() == "llama3":
            out.update({"use_NTK_by_parts_rope": True,
                        "NTK_original_ctx_len": rope.get("original_max_position_embeddings",
                                                         hf_config.max_position_embeddings),
                        "NTK_by_parts_low_freq_factor": rope.get("low_freq_factor", 1.0),
                        "NTK_by_parts_high_freq_factor": rope.get("high_freq_factor", 4.0),
                        "NTK_by_parts_factor": rope.get("factor", 1.0)})
    else:  # gemma2
        types = getattr(hf_config, "layer_types", None) or [
            "sliding_attention" if i % 2 == 0 else "full_attention" for i in range(hf_config.num_hidden_layers)]
        out.update({"n_key_value_heads": kv, "act_fn": hf_config.hidden_activation,
                    "window_size": hf_config.sliding_window,
                    "attn_types": ["local" if t == "sliding_attention" else "global" for t in types],
                    "attn_scores_soft_cap": float(hf_config.attn_logit_softcapping or -1.0),
                    "output_logits_soft_cap": float(hf_config.final_logit_softcapping or -1.0)})
        if hf_config.query_pre_attn_scalar != d_head:
            out["attn_scale"] = math.sqrt(hf_config.query_pre_attn_scalar)
    return out


@contextlib.contextmanager
def _pinned_tl_config(official: str, hf_config, record: dict | None = None):
    """While active, TransformerLens builds the config of ``official`` from ``hf_config`` (see module doc):
    its ``AutoConfig.from_pretrained(official)`` returns ``hf_config`` (other names raise instead of reaching
    the network), and ``tl_overrides(hf_config)`` replace the fields it hard-codes by name. ``record`` gets
    {"overridden": {field: (tl_value, hf_value)}}."""
    import copy

    import transformer_lens.loading_from_pretrained as L

    orig_convert, orig_auto = L.convert_hf_model_config, L.AutoConfig

    def resolves(name) -> bool:
        try:
            return L.get_official_model_name(str(name)) == official
        except ValueError:
            return False

    class PinnedAutoConfig:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            if resolves(name):
                return copy.deepcopy(hf_config)
            raise RuntimeError(f"saeflow.models.hf: TransformerLens asked for the config of {name!r} while loading "
                               f"{official!r}; only the pinned config of {official!r} is available")

    def convert(name, **kwargs):
        cfg = orig_convert(name, **kwargs)
        if resolves(name):
            arch = (getattr(hf_config, "architectures", None) or [None])[0]
            if arch is not None and cfg.get("original_architecture") != arch:
                raise ValueError(f"model spec key 'tl_name' selects TransformerLens' {official!r} conversion "
                                 f"({cfg.get('original_architecture')}), but the model is a {arch}")
            over = tl_overrides(hf_config)
            if record is not None:
                record["overridden"] = {k: (cfg.get(k), v) for k, v in over.items() if cfg.get(k) != v}
            cfg.update(over)
        return cfg

    with _TL_LOCK:
        L.convert_hf_model_config, L.AutoConfig = convert, PinnedAutoConfig
        try:
            yield
        finally:
            L.convert_hf_model_config, L.AutoConfig = orig_convert, orig_auto


def tl_config(hf_config, tl_name: str) -> tuple[dict, dict]:
    """(TL config dict that ``load_hooked`` uses for this HF config under ``tl_name``, {field: (TL's by-name
    value, value from the HF config)} for the fields the HF config changed). Reads nothing from the network."""
    import transformer_lens.loading_from_pretrained as L

    official = L.get_official_model_name(tl_name)
    record: dict = {}
    with _pinned_tl_config(official, hf_config, record):
        cfg = L.convert_hf_model_config(official)
    return cfg, record.get("overridden", {})


def _check_shape(s: dict, facts: dict, where: str) -> None:
    for k in ("n_layers", "d_model"):
        if facts[k] != s[k]:
            raise ValueError(f"model spec key {k!r} = {s[k]} does not match {s['hf_id']!r} ({where}: {k} = "
                             f"{facts[k]}); fix {k} in the model's config entry")


def load_hf_model(spec: dict, **kwargs):
    """``AutoModelForCausalLM`` from ``local_dir`` (local files only) or the hub at the pinned revision, in the
    spec's dtype, on CPU, eval mode. kwargs go to ``from_pretrained`` (e.g. ``attn_implementation="eager"``)."""
    import torch
    from transformers import AutoModelForCausalLM

    s = check_spec(spec)
    src, kw = _source(s)
    try:
        model = AutoModelForCausalLM.from_pretrained(src, dtype=getattr(torch, s["dtype"]), **kw, **kwargs)
    except OSError as e:
        if s["local_dir"] is None:
            raise _hub_error(s, "weights", e) from e
        raise
    return model.eval()


def load_hooked(spec: dict, device: str = "cpu"):
    """The spec's model as a TransformerLens ``HookedTransformer`` in eval mode.

    ``HookedTransformer.from_pretrained_no_processing`` ("none") or ``from_pretrained`` ("default") of
    ``official_tl_name(spec)`` with ``hf_model=`` (``load_hf_model``: local_dir or pinned hub revision) and
    ``tokenizer=`` (``load_tokenizer``, with ``add_bos_token=True`` when it has a BOS), dtype and device from
    the spec, ``default_prepend_bos=spec["prepend_bos"]``; TL's config comes from the loaded model's config
    (``_pinned_tl_config``), so with ``local_dir`` nothing touches the network. n_layers and d_model are
    checked against the spec (ValueError naming the key) before and after conversion.
    """
    from transformer_lens import HookedTransformer

    s = check_spec(spec)
    official = official_tl_name(s)
    if s["local_dir"] is not None:
        _check_shape(s, model_facts(s["local_dir"]), f"{s['local_dir']}/config.json")
    probe = load_tokenizer(s)
    tokenizer = load_tokenizer(s, add_bos_token=True) if probe.bos_token is not None else probe
    hf_model = load_hf_model(s)
    _check_shape(s, model_facts_from_dict(hf_model.config.to_dict()), "config")
    load = HookedTransformer.from_pretrained_no_processing if s["processing"] == "none" \
        else HookedTransformer.from_pretrained
    with _pinned_tl_config(official, hf_model.config), _quiet():
        model = load(official, hf_model=hf_model, tokenizer=tokenizer, dtype=s["dtype"], device=device,
                     default_prepend_bos=s["prepend_bos"])
    del hf_model
    _check_shape(s, {"n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model}, "TransformerLens cfg")
    if len(tokenizer) > model.cfg.d_vocab:
        raise ValueError(f"tokenizer of {s['hf_id']!r} has {len(tokenizer)} tokens, more than the model's vocabulary "
                         f"({model.cfg.d_vocab})")
    return model.eval()


@contextlib.contextmanager
def _quiet():
    """TL 3.9 warns that from_pretrained is deprecated (in favour of TransformerBridge) and prints a line."""
    import contextlib as cl
    import io
    import warnings

    with warnings.catch_warnings(), cl.redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", message=r".*(from_pretrained|HookedTransformer) is deprecated.*",
                                category=DeprecationWarning)
        yield
