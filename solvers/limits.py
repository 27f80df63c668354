"""Every user-facing limit, defined once.

The solvers validate against these; the service's request schemas and its problem+json
"allowed" texts import them (never copy them).  Changing a range here changes it everywhere.
"""
from __future__ import annotations

# Models (THEORY.md sections 1 and 2).
MAX_LAYERS = 4
MAX_TOKENS = 4
MAX_SKIP = 1000.0
MAX_BETA = 100.0
MAX_NOISE = 100.0
# Weight priors: a sparse (Gauss-Bernoulli) prior's density rho lies in (MIN_DENSITY, MAX_DENSITY]
MIN_DENSITY = 0.0
MAX_DENSITY = 1.0

# Questions about a model.
MAX_ALPHAS = 50  # sample ratios in one state-evolution request
MAX_ALPHA = 1000.0  # largest sample ratio alpha = N / D a request may ask about
MAX_DIMENSION = 1_000_000_000  # input dimension D for sample counts
MAX_SEED = 2**31 - 1
MAX_PREDICTION_ERROR = 1000.0

# GAMP on finite instances.
AMP_MIN_DIMENSION = 50
AMP_MAX_DIMENSION = 5000
AMP_MAX_ALPHA = 10.0
AMP_MAX_SEEDS = 10
AMP_MAX_ITERATIONS = 200
AMP_MAX_DAMPING = 0.9
AMP_MAX_INPUT_ENTRIES = 60_000_000  # N * M * D of the training inputs (480 MB of float64)

# Comparisons of a measured learning curve with the theory's.
MAX_COMPARISON_POINTS = 200

# Sweeps.
MAX_SWEEP_POINTS = 400

# Formula links (multi-index, solvers/channels/formula.py).
MAX_FORMULA_LENGTH = 200  # characters
MAX_FORMULA_DEPTH = 12  # nesting of operations and calls
MAX_FORMULA_INDICES = 4  # variables z1 .. z4
MAX_FORMULA_EXPONENT = 8.0  # |constant exponent| of **
MAX_FORMULA_CONSTANT = 1e6  # |numbers| written in a formula
MAX_FORMULA_VALUES = 64  # distinct outputs of a noiseless finite-valued formula
