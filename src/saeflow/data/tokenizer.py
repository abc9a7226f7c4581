"""A small byte-level BPE tokenizer for the embedded (offline) presets, and corpus encoding helpers.

The tokenizer is saved with `save_pretrained` and always used through `load_tokenizer`: TransformerLens
re-loads a tokenizer from its `name_or_path` and rejects one built in memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["SPECIAL_TOKENS", "train_bpe", "load_tokenizer", "encode_documents", "unigram_entropy_bits"]

# Ids 0, 1, 2 in this order: the trainer gives special tokens the first ids.
SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|pad|>")


def train_bpe(texts: Iterable[str], vocab_size: int, out_dir: str | Path, min_frequency: int = 2) -> None:
    """Train a byte-level BPE on `texts` and save it as a PreTrainedTokenizerFast in `out_dir`.

    GPT-2 style: ByteLevel pre-tokenizer (add_prefix_space=False) and decoder, all 256 bytes in the base
    alphabet (so any text round-trips), special tokens <|bos|>=0, <|eos|>=1, <|pad|>=2, no post-processor
    (encoding adds no special token). `vocab_size` counts the 3 special tokens and 256 bytes, so it must be
    > 259. Training is deterministic for the same texts and arguments.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if int(vocab_size) != vocab_size or vocab_size <= 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be an integer > {256 + len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    if int(min_frequency) != min_frequency or min_frequency < 1:
        raise ValueError(f"min_frequency must be an integer >= 1, got {min_frequency!r}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=int(vocab_size),
        min_frequency=int(min_frequency),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos, eos, pad = SPECIAL_TOKENS
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out_dir))


def load_tokenizer(path: str | Path):
    """The tokenizer saved by `train_bpe` (or any saved fast tokenizer) at `path`."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def encode_documents(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text as int32 arrays, without special tokens (batch-encoded by the Rust backend)."""
    backend = tokenizer.backend_tokenizer
    # encode_batch_fast skips offset computation; same ids as encode_batch.
    encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
    return [np.asarray(e.ids, dtype=np.int32) for e in encode(list(texts), add_special_tokens=False)]


def unigram_entropy_bits(token_docs: list[np.ndarray], vocab_size: int) -> float:
    """Entropy H = -sum_t p(t) log2 p(t) of the empirical token distribution over all documents, in bits."""
    ids = np.concatenate([np.asarray(d, dtype=np.int64).ravel() for d in token_docs] + [np.zeros(0, np.int64)])
    if ids.size == 0:
        raise ValueError("token_docs must hold at least one token")
    if ids.min() < 0 or ids.max() >= vocab_size:
        lo, hi = ids.min(), ids.max()
        raise ValueError(f"token ids must lie in [0, vocab_size={vocab_size}), got ids in [{lo}, {hi}]")
    counts = np.bincount(ids, minlength=vocab_size)
    p = counts[counts > 0] / ids.size
    return float(-(p * np.log2(p)).sum())
