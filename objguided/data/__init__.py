"""Datasets in the canonical format: readers, writers, splits, synthetic generators."""
