"""Datasets: loaders for the shared layout, task splits, label-noise injection."""
