"""Scoring trained models: the evaluator network (`classifier`), the metrics (`metrics`), the VAE's
likelihood (`likelihood`), and `scoring`, which puts them together for a run."""

from fastgen.evaluation.scoring import evaluate

__all__ = ["evaluate"]
