"""Stage 5, report: figures and the published tree."""
