"""Model specifications: frozen, validated on construction, canonical as dicts.

Two families (THEORY.md sections 1 and 2):

* ``deep_attention``: L layers of tied rank-1 attention on M tokens, skip strengths c_l,
  inverse temperatures beta_l; the output is the last layer's attention matrix.
* ``multi_index``: M = 1 multi-index models y = g(z) (+ Gaussian noise) with a named link
  (the links and their facts are the channel classes of :mod:`solvers.channels.multi_index`).

A spec finds its channel by name in the channel registry (:func:`solvers.channels.make_channel`).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Union

from .channels import make_channel
from .channels.base import Channel
from .channels.formula import EXAMPLES as FORMULA_EXAMPLES, GRAMMAR as FORMULA_GRAMMAR
from .channels.multi_index import LINKS, FormulaChannel, check_formula_link
from .errors import SpecError
from .limits import (MAX_BETA, MAX_DENSITY, MAX_FORMULA_INDICES, MAX_FORMULA_LENGTH, MAX_LAYERS, MAX_NOISE,
                     MAX_SKIP, MAX_TOKENS, MIN_DENSITY)
from .priors import GAUSSIAN, Prior, prior_from_dict


def _finite(name: str, value, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise SpecError(name, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]") from None
    ok = math.isfinite(x) and (x > lo if lo_open else x >= lo) and x <= hi
    if not ok:
        raise SpecError(name, value, f"a number in {'(' if lo_open else '['}{lo}, {hi}]")
    return x


def _per_layer(name: str, value, layers: int, lo: float, hi: float, lo_open: bool) -> tuple[float, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != layers:
            raise SpecError(name, value, f"one number or a list of {layers} numbers (one per layer)")
        return tuple(_finite(f"{name}[{i}]", v, lo, hi, lo_open) for i, v in enumerate(value))
    return (_finite(name, value, lo, hi, lo_open),) * layers


def _prior(value) -> Prior:
    return prior_from_dict(value, (MIN_DENSITY, MAX_DENSITY))


def _with_prior(d: dict, prior: Prior) -> dict:
    """The canonical dict: ``prior`` only when not Gaussian (so the cache keys of Gaussian
    questions are those they always had)."""
    d.pop("prior", None)
    if prior != GAUSSIAN:
        d["prior"] = prior.to_dict()
    return d


def _integer(name: str, value, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int,)) and not (
            isinstance(value, float) and value.is_integer()):
        raise SpecError(name, value, f"an integer in [{lo}, {hi}]")
    v = int(value)
    if not lo <= v <= hi:
        raise SpecError(name, value, f"an integer in [{lo}, {hi}]")
    return v


def _known(value, count: int, noun: str) -> tuple[int, ...]:
    """Validated ``known_layers``: distinct integers in [1, count], not all of them, sorted."""
    allowed = f"a list of distinct {noun} numbers in [1, {count}], not all {count}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise SpecError("known_layers", value, allowed)
    known = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not (isinstance(v, int) or isinstance(v, float) and v.is_integer()) \
                or not 1 <= int(v) <= count:
            raise SpecError(f"known_layers[{i}]", v, f"an integer in [1, {count}]")
        known.append(int(v))
    if len(set(known)) != len(known) or len(known) >= count:
        raise SpecError("known_layers", value, allowed)
    return tuple(sorted(known))


def _with_known(d: dict) -> dict:
    """to_dict's known_layers only when some are known: unchanged cache keys otherwise."""
    d["known_layers"] = list(d["known_layers"])
    if not d["known_layers"]:
        del d["known_layers"]
    return d


@dataclass(frozen=True)
class DeepAttentionSpec:
    """Deep tied low-rank attention (THEORY.md section 2), rank 1 per layer.

    a_1 = z_1, A_l = c_l I + softmax_rows(beta_l a_l a_l^T), a_l = A_{l-1} ... A_1 z_l,
    y = softmax_rows(beta_L a_L a_L^T).  ``skip`` and ``beta`` are one value or one per
    layer; the last layer's skip never enters the output.  ``noise`` is the variance
    Delta of Gaussian noise added to y (0 = noiseless, solved by exact inversion).
    ``known_layers``: layers (1-based) given exactly, e.g. pretrained (THEORY.md section 7).
    """

    layers: int = 2
    tokens: int = 2
    skip: tuple[float, ...] | float = 1.0
    beta: tuple[float, ...] | float = 1.0
    noise: float = 0.0
    family: str = "deep_attention"
    prior: Prior | dict | None = None  # the weights' prior (solvers.priors); None: Gaussian
    known_layers: tuple[int, ...] = ()

    def __post_init__(self):
        layers = _integer("layers", self.layers, 1, MAX_LAYERS)
        tokens = _integer("tokens", self.tokens, 2, MAX_TOKENS)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "tokens", tokens)
        object.__setattr__(self, "skip", _per_layer("skip", self.skip, layers, 0.0, MAX_SKIP, False))
        object.__setattr__(self, "beta", _per_layer("beta", self.beta, layers, 0.0, MAX_BETA, True))
        object.__setattr__(self, "noise", _finite("noise", self.noise, 0.0, MAX_NOISE))
        if self.family != "deep_attention":
            raise SpecError("family", self.family, "'deep_attention'")
        object.__setattr__(self, "prior", _prior(self.prior))
        known = _known(self.known_layers, layers, "layer")
        if layers in known and (self.noise != 0.0 or (layers, tokens) != (2, 2)):
            # the posterior then lives on the set {B(z_<L) z_L = +-a}: solved in closed form for
            # L = 2, M = 2 only (channels.deep_attention.posterior_last_layer_known)
            raise SpecError("known_layers", list(self.known_layers),
                            f"layers below the last ({layers}); the last layer may be known only "
                            "for layers = 2, tokens = 2, noise = 0")
        object.__setattr__(self, "known_layers", known)

    @property
    def n_indices(self) -> int:
        return self.layers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["skip"] = list(self.skip)
        d["beta"] = list(self.beta)
        return _with_known(_with_prior(d, self.prior))

    def channel(self) -> Channel:
        channel = make_channel("deep_attention", spec=self)
        channel.prior = self.prior
        return channel.with_known(k - 1 for k in self.known_layers)


@dataclass(frozen=True)
class FormulaLink:
    """A link given by a formula (:mod:`solvers.channels.formula`), kept in canonical form."""

    formula: str


@dataclass(frozen=True)
class MultiIndexSpec:
    """A multi-index model (M = 1): y = g(W x / sqrt(D)) + sqrt(noise) * N(0, 1).

    ``link`` is a registered name or a formula, ``{"formula": "sign(z1*z2)"}`` (or a
    :class:`FormulaLink`); a formula in z1 .. zP has P indices by default (more may be asked
    for: the extra directions do not enter the output).  ``known_layers``: indices (1-based rows
    of W) given exactly (THEORY.md section 7)."""

    link: str | FormulaLink = "square"
    indices: int | None = None
    noise: float = 0.0
    family: str = "multi_index"
    prior: Prior | dict | None = None  # the weights' prior (solvers.priors); None: Gaussian
    known_layers: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "noise", _finite("noise", self.noise, 0.0, MAX_NOISE))
        if isinstance(self.link, (dict, FormulaLink)):
            formula = self.link.get("formula") if isinstance(self.link, dict) else self.link.formula
            if isinstance(self.link, dict) and set(self.link) != {"formula"}:
                raise SpecError("link", self.link, '{"formula": "<expression>"} or a link name')
            parsed = check_formula_link(formula, self.noise)
            object.__setattr__(self, "link", FormulaLink(parsed.text))
            lo, hi = parsed.n_indices, MAX_FORMULA_INDICES
        elif self.link not in LINKS:
            raise SpecError("link", self.link, "one of " + ", ".join(LINKS) + ', or {"formula": ...}')
        else:
            lo = hi = LINKS[self.link].n_indices
        object.__setattr__(self, "indices", lo if self.indices is None
                           else _integer("indices", self.indices, lo, hi))
        if self.family != "multi_index":
            raise SpecError("family", self.family, "'multi_index'")
        object.__setattr__(self, "prior", _prior(self.prior))
        object.__setattr__(self, "known_layers", _known(self.known_layers, self.indices, "index"))

    @property
    def n_indices(self) -> int:
        return self.indices

    def to_dict(self) -> dict:
        return _with_known(_with_prior(asdict(self), self.prior))

    def channel(self) -> Channel:
        known = [k - 1 for k in self.known_layers]
        if isinstance(self.link, FormulaLink):
            channel = FormulaChannel(self.link.formula, noise=self.noise, indices=self.indices)
        else:
            channel = make_channel(self.link, noise=self.noise)
        channel.prior = self.prior
        return channel.with_known(known)


ModelSpec = Union[DeepAttentionSpec, MultiIndexSpec]

FAMILIES = {"deep_attention": DeepAttentionSpec, "multi_index": MultiIndexSpec}


def spec_from_dict(data: dict) -> ModelSpec:
    """Build a validated spec from a dict with a ``family`` key."""
    family = data.get("family")
    if family not in FAMILIES:
        raise SpecError("family", family, "one of " + ", ".join(FAMILIES))
    cls = FAMILIES[family]
    allowed = set(cls.__dataclass_fields__)
    unknown = set(data) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise SpecError(name, data[name], "no such parameter; allowed: " + ", ".join(sorted(allowed)))
    return cls(**data)


def catalogue() -> dict:
    """Families and links with their parameters, ranges and defaults."""
    return {
        "deep_attention": {
            "description": DeepAttentionSpec.__doc__.strip().splitlines()[0],
            "parameters": {
                "layers": {"type": "integer", "min": 1, "max": MAX_LAYERS, "default": 2},
                "tokens": {"type": "integer", "min": 2, "max": MAX_TOKENS, "default": 2},
                "skip": {"type": "number or list per layer", "min": 0.0, "max": MAX_SKIP, "default": 1.0},
                "beta": {"type": "number or list per layer", "exclusive_min": 0.0, "max": MAX_BETA,
                         "default": 1.0},
                "noise": {"type": "number", "min": 0.0, "max": MAX_NOISE, "default": 0.0},
                "prior": {"type": "object", "kinds": {"gaussian": {}, "binary": {},
                                                      "sparse": {"density": {"exclusive_min": MIN_DENSITY,
                                                                             "max": MAX_DENSITY}}},
                          "default": {"kind": "gaussian"}},
                "known_layers": {"type": "list of layer numbers", "min": 1, "max": MAX_LAYERS, "default": []},
            },
        },
        "multi_index": {
            "description": MultiIndexSpec.__doc__.strip().splitlines()[0],
            "parameters": {
                "link": {"type": "string", "allowed": list(LINKS), "default": "square"},
                "indices": {"type": "integer", "default": "set by the link"},
                "noise": {"type": "number", "min": 0.0, "max": MAX_NOISE, "default": 0.0},
                "prior": {"type": "object", "kinds": {"gaussian": {}, "binary": {},
                                                      "sparse": {"density": {"exclusive_min": MIN_DENSITY,
                                                                             "max": MAX_DENSITY}}},
                          "default": {"kind": "gaussian"}},
                "known_layers": {"type": "list of index numbers", "min": 1, "default": []},
            },
            "links": {name: {"indices": link.n_indices, "noiseless": link.noiseless_well_posed,
                             "formula": link.formula} for name, link in LINKS.items()},
            "formula_links": {
                "usage": '"link": {"formula": "<expression in z1 .. zP>"}',
                "grammar": FORMULA_GRAMMAR,
                "examples": list(FORMULA_EXAMPLES),
                "max_length": MAX_FORMULA_LENGTH, "max_indices": MAX_FORMULA_INDICES,
                "noiseless": "formulas with finitely many values (numbers, sign, comparisons), and "
                             "formulas in z1 alone that can be inverted (continuous and nowhere flat, "
                             "e.g. z1**2, z1**3, tanh(z1): the posterior sits on the roots of "
                             "g(z1) = y); others (relu(z1), min(z1, 0), any continuous formula in "
                             "z1 .. zP with P >= 2) need noise > 0",
                "canonical": "operands of sums and products are sorted: z2*z1 and z1*z2 are one model",
            },
        },
    }
