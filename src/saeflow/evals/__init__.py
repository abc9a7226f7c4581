"""Stage 4, evals: reconstruction, probing, feature influence and locality, autocorrelation, geometry."""
