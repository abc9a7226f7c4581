"""Stage 1, data: corpora, windows, the embedded tokenizer, activation caching and streaming."""
