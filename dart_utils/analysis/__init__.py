"""Statistics and the paper's result tables, recomputed from a run's artifacts."""
