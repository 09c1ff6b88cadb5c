"""Helpers the runtimes and the pipeline share: images (sample photos, calibration, preprocessing), labels,
evaluation sets, output comparison, per-layer error ranking, file digests. Imports nothing above it."""
