"""Benchmarks of fingerprint schemes: definitions (``suite``), the resumable parallel runner (``runner``),
QuRD-compatible metrics (``metrics``), a reader of QuRD's own raw scores (``qurd``) and the HTML report
(``report``)."""

from . import qurd, report
from .metrics import summarize
from .runner import read_scores, run
from .suite import BENCHMARKS, Benchmark, Target, load

__all__ = ["BENCHMARKS", "qurd", "report", "Benchmark", "Target", "load", "read_scores", "run", "summarize"]
