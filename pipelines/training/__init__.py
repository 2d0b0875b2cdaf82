"""Model development: training, evaluation, datasets, metrics and the benchmark (never imported by the
runtime pipelines)."""
