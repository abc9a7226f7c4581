"""What `snakemake --report` says of each figure in figures/: its category (the stage that made it), its
subcategory (the preset, or "all presets" for a cross-model figure) and a caption (what it shows and which node
made it). The export rule flags its figures for the report and renders report/figure.rst with this caption."""

from __future__ import annotations

# figure kind (the file name up to its first "__") -> (category, what it shows)
FIGURES = {
    "recon_summary": ("Reconstruction", ("Reconstruction of every dictionary at every layer: variance explained, L0, CE "
                                        "loss recovered and KL with the dictionary spliced in, with 95% bootstrap CIs "
                                        "over sequences.")),
    "entropy_vs_depth_grid": ("Locality", ("Feature-influence entropy vs depth, one panel per preset: the distribution "
                                          "of per-latent mean entropy at each layer, with log2 T.")),
    "entropy_vs_depth": ("Locality", ("Entropy vs depth of one preset and dataset: per-layer distribution of per-latent "
                                     "mean entropy, the top-20 latents' mean, the token-vector entropy and log2 T.")),
    "probe": ("Evals", ("Sparse probing: test accuracy vs k of the SAE latents (solid) and the raw-activation baseline "
                       "(dashed), with Wilson intervals.")),
    "saebench": ("Evals", ("SAEBench's sparse probing, one panel per task and layer: accuracy vs k of balanced "
                           "one-vs-rest probes on the top-k latents of each SAE (solid) and the top-k dims of the "
                           "site's activations (black dashed, once per site), averaged over each task's classes.")),
    "circuit": ("Evals", ("Sparse feature circuits: accuracy vs K of each layer's circuit against random same-size sets "
                         "and all latents; the build-up over layers; each ablation against its seeded nulls.")),
    "steer": ("Evals", ("Steering: concept success, perplexity and logit margin vs alpha for the latent, the diff of "
                       "means and the random controls; each direction's effect at its chosen alpha.")),
    "autointerp": ("Evals", ("Auto-interp: detection and fuzzing accuracy per dictionary and layer with the "
                            "shuffled-explanation control (hollow) and chance (dotted), two-level bootstrap CIs.")),
    "autocorr": ("Evals", "Activation autocorrelation: the median curve with its 10-90% band and examples."),
    "geometry": ("Evals", ("Decoder geometry: cosine of decoder rows vs the absolute difference of the latents' mean "
                          "H_pos, with its permutation null.")),
    "compare": ("Comparisons", ("Head-to-head verdicts: each shared headline's difference A - B with its bootstrap CI, "
                               "coloured by verdict.")),
    "control": ("Comparisons", ("Each dictionary of the trained model (A) against the same dictionary of its "
                               "randomized-model control (B).")),
    "feature_diff": ("Comparisons", ("Cross-model feature diff: best activation correlations against the shifted null "
                                    "and the threshold; asymmetry vs best correlation.")),
    "ledger": ("Results ledger", ("The results ledger: one row per (preset, dataset, layer, dictionary, eval) with its "
                                 "headline, CI, provenance and verdict (also data/LEDGER.md).")),
}
CATEGORIES = ("Reconstruction", "Locality", "Evals", "Comparisons", "Results ledger")


def describe(name: str) -> tuple[str, str, str]:
    """(category, subcategory, what it shows) of a figure file name: `<kind>__<preset>__<dataset>.png` (a
    preset's) or `<kind>.png` (all presets)."""
    stem = name.rsplit(".", 1)[0]
    parts = stem.split("__")
    kind = parts[0]
    if kind not in FIGURES:
        raise KeyError(f"figure {name!r}: no caption for kind {kind!r}; known kinds: {', '.join(FIGURES)}")
    category, text = FIGURES[kind]
    if len(parts) == 4:   # a pair of presets: <kind>__<A>__<B>__<dataset>
        return category, parts[1], f"{text} Presets {parts[1]} (A) and {parts[2]} (B), dataset {parts[3]}."
    if len(parts) == 3:
        return category, parts[1], f"{text} Preset {parts[1]}, dataset {parts[2]}."
    return category, "all presets", text


def caption(name: str, step: str, key: str) -> str:
    """The report caption of a figure: what it shows, and the node that made it (step and store key)."""
    return f"{describe(name)[2]} Made by the ``{step}`` node, store key ``{key}`` (data/store/{step}/{key}/)."
