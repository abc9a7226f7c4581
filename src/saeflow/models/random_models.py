"""Tiny randomly initialised Hugging Face models of every architecture family (GPT-2, GPT-NeoX,
Llama, Qwen2, Qwen3, Gemma-2), saved with a locally trained tokenizer: stand-ins for the paper presets' models that
load through exactly the same path (``saeflow.models.hf.load_hooked``), offline.
"""

from __future__ import annotations

import json
from pathlib import Path

from saeflow.models.hf import DTYPES, FAMILIES, FAMILY_TL_NAME, model_facts

# Special tokens per family, in id order (the BPE trainer gives them the first ids), and (bos, eos, pad).
_SPECIALS = {
    "gpt2": (["<|endoftext|>"], ("<|endoftext|>", "<|endoftext|>", None)),
    "gpt-neox": (["<|endoftext|>", "<|padding|>"], ("<|endoftext|>", "<|endoftext|>", "<|padding|>")),
    "llama": (["<|begin_of_text|>", "<|end_of_text|>"], ("<|begin_of_text|>", "<|end_of_text|>", None)),
    "qwen2": (["<|endoftext|>"], (None, "<|endoftext|>", "<|endoftext|>")),
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], (None, "<|im_end|>", "<|endoftext|>")),
    "gemma2": (["<pad>", "<eos>", "<bos>"], ("<bos>", "<eos>", "<pad>")),
}


_ADDS_BOS = ("llama", "gemma2")  # tokenizers whose encode() prepends BOS, as the real ones do


_TINY_VOCAB = 400


# ChatML, as the Qwen3 Instruct tokenizers render a conversation (without their tool/thinking branches).
_CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
           "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
_CHAT_TEMPLATES = {"qwen3": _CHATML}


def _train_family_tokenizer(family: str, out_dir: Path, vocab_size: int = _TINY_VOCAB):
    """A byte-level BPE with the family's special tokens (ids as in ``_SPECIALS``), saved and reloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    from saeflow.data.corpus import synthetic_documents

    specials, (bos, eos, pad) = _SPECIALS[family]
    docs, _ = synthetic_documents(40, 60, seed=0, n_filler=64, n_topic_words=8, n_topics=2)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([d.text for d in docs], trainer=trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    if family in _ADDS_BOS:
        bid = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, bid)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    if family in _CHAT_TEMPLATES:
        fast.chat_template = _CHAT_TEMPLATES[family]
    fast.save_pretrained(str(out_dir))
    return AutoTokenizer.from_pretrained(str(out_dir))  # TL rejects in-memory tokenizers: always reload


def family_config(family: str, size: str = "tiny", vocab_size: int | None = None, special_ids: dict | None = None):
    """The transformers config of a random model of ``family``.

    size "tiny": 3 layers, d_model 64, 4 heads of 16 (2 KV heads where the family has GQA), d_mlp 128,
    initializer_range 0.1 (so attention is far from uniform and positional/rotary/window errors show);
    Gemma-2 with sliding_window 4 and soft caps 5 (attention) / 3 (logits) so both mechanisms act on short
    windows; Llama with the llama3 rope scaling of Llama-3.2. size "real": the shapes of the paper model
    (gpt2-small, pythia-70m-deduped, Qwen2-0.5B, Qwen3-4B-Instruct-2507, Llama-3.2-1B, gemma-2-2b). ``vocab_size`` defaults to the
    real vocabulary; ``special_ids`` = {"bos", "eos", "pad"} token ids.
    """
    from transformers import Gemma2Config, GPT2Config, GPTNeoXConfig, LlamaConfig, Qwen2Config, Qwen3Config

    _check_family(family, size)
    ids = special_ids or {}
    tiny = size == "tiny"
    real = {"gpt2": dict(layers=12, d=768, heads=12, vocab=50257),
            "gpt-neox": dict(layers=6, d=512, heads=8, mlp=2048, vocab=50304),
            "qwen2": dict(layers=24, d=896, heads=14, kv=2, mlp=4864, vocab=151936),
            "qwen3": dict(layers=36, d=2560, heads=32, kv=8, mlp=9728, vocab=151936, head=128),
            "llama": dict(layers=16, d=2048, heads=32, kv=8, mlp=8192, vocab=128256, head=64),
            "gemma2": dict(layers=26, d=2304, heads=8, kv=4, mlp=9216, vocab=256000, head=256)}[family]
    s = {**real, "init": 0.02}
    if tiny:
        s.update(layers=3, d=64, heads=4, kv=2, mlp=128, init=0.1, head=16)
    vocab = vocab_size or real["vocab"]
    if family == "gpt2":
        return GPT2Config(
            n_layer=s["layers"], n_embd=s["d"], n_head=s["heads"], n_positions=128 if tiny else 1024,
            n_ctx=128 if tiny else 1024,  # not a GPT2Config field, but in gpt2's config.json, and TL reads it
            vocab_size=vocab, activation_function="gelu_new", layer_norm_epsilon=1e-5,
            initializer_range=s["init"], bos_token_id=ids.get("bos", 50256),
            eos_token_id=ids.get("eos", 50256), tie_word_embeddings=True, architectures=["GPT2LMHeadModel"])
    if family == "gpt-neox":
        return GPTNeoXConfig(
            num_hidden_layers=s["layers"], hidden_size=s["d"], num_attention_heads=s["heads"],
            intermediate_size=s["mlp"], max_position_embeddings=128 if tiny else 2048, vocab_size=vocab,
            hidden_act="gelu", rotary_pct=0.25, rotary_emb_base=10000, layer_norm_eps=1e-5,
            use_parallel_residual=True, initializer_range=s["init"], tie_word_embeddings=False,
            bos_token_id=ids.get("bos", 0), eos_token_id=ids.get("eos", 0), pad_token_id=ids.get("pad"),
            architectures=["GPTNeoXForCausalLM"])
    if family == "qwen2":
        return Qwen2Config(
            num_hidden_layers=s["layers"], hidden_size=s["d"], num_attention_heads=s["heads"],
            num_key_value_heads=s["kv"], intermediate_size=s["mlp"], max_position_embeddings=131072,
            vocab_size=vocab, hidden_act="silu", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, use_sliding_window=False,
            initializer_range=s["init"], tie_word_embeddings=True,
            bos_token_id=ids.get("eos", 151643), eos_token_id=ids.get("eos", 151643),
            architectures=["Qwen2ForCausalLM"])
    if family == "qwen3":
        return Qwen3Config(
            num_hidden_layers=s["layers"], hidden_size=s["d"], num_attention_heads=s["heads"],
            num_key_value_heads=s["kv"], head_dim=s["head"], intermediate_size=s["mlp"],
            max_position_embeddings=262144, vocab_size=vocab, hidden_act="silu", rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "rope_theta": 5000000.0}, use_sliding_window=False,
            attention_bias=False, initializer_range=s["init"], tie_word_embeddings=True,
            bos_token_id=ids.get("pad", 151643), eos_token_id=ids.get("eos", 151645),
            architectures=["Qwen3ForCausalLM"])
    if family == "llama":
        return LlamaConfig(
            num_hidden_layers=s["layers"], hidden_size=s["d"], num_attention_heads=s["heads"],
            num_key_value_heads=s["kv"], head_dim=s["head"], intermediate_size=s["mlp"],
            max_position_embeddings=131072, vocab_size=vocab, hidden_act="silu",
            rms_norm_eps=1e-5, rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
                                                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 8192},
            initializer_range=s["init"], tie_word_embeddings=True,
            bos_token_id=ids.get("bos", 128000), eos_token_id=ids.get("eos", 128001), pad_token_id=ids.get("pad"),
            architectures=["LlamaForCausalLM"])
    return Gemma2Config(
        num_hidden_layers=s["layers"], hidden_size=s["d"], num_attention_heads=s["heads"],
        num_key_value_heads=s["kv"], head_dim=s["head"], query_pre_attn_scalar=s["head"],
        intermediate_size=s["mlp"], max_position_embeddings=8192, vocab_size=vocab,
        hidden_activation="gelu_pytorch_tanh", rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        sliding_window=4 if tiny else 4096, attn_logit_softcapping=5.0 if tiny else 50.0,
        final_logit_softcapping=3.0 if tiny else 30.0, initializer_range=s["init"],
        tie_word_embeddings=True, bos_token_id=ids.get("bos", 2), eos_token_id=ids.get("eos", 1),
        pad_token_id=ids.get("pad", 0), architectures=["Gemma2ForCausalLM"])


def _check_family(family: str, size: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}; got {family!r}")
    if size not in ("tiny", "real"):
        raise ValueError(f"size must be 'tiny' or 'real'; got {size!r}")


def _dir_digest(d: Path) -> str:
    """sha256 over the {relative path: sha256} map of every file under d (the store's file hashing)."""
    from saeflow.workflow.keys import sha256_hex
    from saeflow.workflow.store import file_hashes

    return sha256_hex(json.dumps({rel: f["sha256"] for rel, f in file_hashes(d).items()}, sort_keys=True))


def random_model(family: str, out_dir: str | Path, size: str = "tiny", seed: int = 0,
                 dtype: str = "float32") -> dict:
    """Build a randomly initialised HF model of ``family`` (``family_config``), save it with a locally trained
    tokenizer of the family's special tokens into ``out_dir`` (``save_pretrained``, safetensors), and return
    its model spec (hf_id ``saeflow-random/<family>-<size>``, revision = the first 40 hex digits of the sha256
    of the saved files (shaped like a commit sha, so the same spec also works as a hub-cache snapshot),
    local_dir = out_dir, tl_name = the family's paper model, processing "none", prepend_bos True).

    Initialisation: transformers' own init with ``seed``, then every 1-D parameter (norm weights, biases)
    is shifted by N(0, 0.1) noise so that norm gains and biases are not trivially 1/0 and conversion errors
    in them show. The tokenizer (vocab ~400) fits in the model vocabulary (tiny: the tokenizer's size rounded
    up to a multiple of 64, as real models pad theirs; real: the real vocabulary).
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    _check_family(family, size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _train_family_tokenizer(family, out_dir)
    ids = {"bos": tok.bos_token_id, "eos": tok.eos_token_id, "pad": tok.pad_token_id}
    vocab = -(-len(tok) // 64) * 64 if size == "tiny" else None
    cfg = family_config(family, size, vocab_size=vocab, special_ids=ids)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.ndim == 1:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    model = model.to(getattr(torch, dtype))
    model.save_pretrained(str(out_dir), safe_serialization=True)
    facts = model_facts(out_dir)
    return {"hf_id": f"saeflow-random/{family}-{size}", "revision": _dir_digest(out_dir)[:40],
            "local_dir": str(out_dir),
            "tl_name": FAMILY_TL_NAME[family], "processing": "none", "dtype": dtype, "prepend_bos": True,
            "n_layers": facts["n_layers"], "d_model": facts["d_model"]}
