"""Staircase solvers: state evolution and learning thresholds of sequence multi-index models.

Pure numerical code (no web, no cache, no I/O).  See THEORY.md for the mathematics.
"""
__version__ = "0.1.0"

from .errors import SpecError
from .models import DeepAttentionSpec, MultiIndexSpec, ModelSpec, catalogue, spec_from_dict

__all__ = ["__version__", "SpecError", "DeepAttentionSpec", "MultiIndexSpec", "ModelSpec", "catalogue",
           "spec_from_dict"]
