"""Benchmarks of fingerprint schemes: definitions (``suite``), the resumable parallel runner (``runner``),
QuRD-compatible metrics (``metrics``) and the HTML report (``report``)."""

from . import report
from .metrics import summarize
from .runner import read_scores, run
from .suite import BENCHMARKS, Benchmark, Target, load

__all__ = ["BENCHMARKS", "report", "Benchmark", "Target", "load", "read_scores", "run", "summarize"]
