"""Evaluation of fitted models."""
