"""Stage 2, models: the embedded language model, Hugging Face models through TransformerLens."""
