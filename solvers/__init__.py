"""Staircase solvers: state evolution and learning thresholds of sequence multi-index models.

Pure numerical code (no web, no cache, no I/O).  See THEORY.md for the mathematics.
"""
import numpy as np

from .channels.attention_kernels import layer_thresholds_L2_grid
from .errors import SpecError
from .models import DeepAttentionSpec, ModelSpec, MultiIndexSpec, catalogue, spec_from_dict
from .state_evolution import fixed_point, state_evolution
from .statistics import outer_normals, output_statistics
from .thresholds import layer_thresholds
from .version import __version__


def warm_up() -> None:
    """Compile (or load from the on-disk numba cache) every kernel on tiny inputs."""
    specs = [DeepAttentionSpec(layers=1), DeepAttentionSpec(), DeepAttentionSpec(layers=3)]
    specs += [MultiIndexSpec(link=link) for link in ("square", "sign", "product")]
    for spec in specs:
        channel = spec.channel()
        P = channel.n_indices
        for q in (0.0, 0.1):  # Q = 0 takes deep attention's shared prior-bank tables
            output_statistics(channel, np.eye(P) * q, outer_normals(channel, 4, 2, 0), 1, plugin=True)
    layer_thresholds_L2_grid(1.0, 1.0, 1.0, 4.0, 4, 4.0, 4)


__all__ = ["__version__", "SpecError", "DeepAttentionSpec", "MultiIndexSpec", "ModelSpec", "catalogue",
           "spec_from_dict", "layer_thresholds", "state_evolution", "fixed_point", "warm_up"]
