"""saeflow: content-addressed sparse-dictionary experiments.

The library has no Snakemake import; the workflow's scripts are thin glue around it.
Heavy libraries (torch, transformer_lens, sae_lens, sparsify) are imported inside the modules that
need them, never here, so that parsing the Snakefile and the CLI stay fast.
"""

__version__ = "0.1.0"
