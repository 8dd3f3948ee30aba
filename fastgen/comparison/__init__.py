"""The paper's GAN-vs-VAE comparison: `runs` trains and scores both models at each checkpoint epoch;
`report` turns the results into report.md and its figures."""

from fastgen.comparison.runs import CompareConfig, compare

__all__ = ["CompareConfig", "compare"]
