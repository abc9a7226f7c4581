"""Stage 6, hub: syncing data/ with a Hugging Face dataset repo."""
