"""Stage 3, dictionaries: training, formats and conversion, encode fidelity, pretrained loaders, quality gates."""
