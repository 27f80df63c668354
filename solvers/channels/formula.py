"""Formula links: a small checked expression language for multi-index links y = g(z1, ..., zP).

Grammar (Python expression syntax, parsed with :mod:`ast`, never evaluated):

* numbers (|x| <= MAX_FORMULA_CONSTANT); variables z1 .. z4 (P = the largest index used);
* ``+ - * /``, unary ``-``, ``x ** c`` with a constant exponent |c| <= MAX_FORMULA_EXPONENT;
* comparisons ``< <= > >= == !=`` (1.0 when true, else 0.0; chains multiply);
* abs, sign (-1, 0, 1), tanh, exp, erf, relu(x) = max(x, 0), min(a, b, ...), max(a, b, ...),
  where(c, a, b) (a where c != 0, else b), and log1p(x), sqrt(x) of a provably non-negative
  argument (e.g. ``sqrt(abs(z1))``).

Anything else (other names, attributes, subscripts, calls, strings, lambdas,
comprehensions, ...) is a :class:`~solvers.errors.SpecError` on ``link.formula`` naming the
token and its column.  A division whose denominator can vanish (interval arithmetic over
R^P) and a formula that is non-finite on a probe sample are refused as well.

The checked tree is put in a canonical form (sums and products flattened and their operands
sorted, ``a > b`` written ``b < a``), so ``z2*z1`` and ``z1*z2`` are one formula (one cache
entry).  :func:`compile_formula` generates the numba source of the link and of its kernels
from the canonical tree alone (a template over the whitelist: user text never reaches the
compiler), writes it to a per-formula module file so numba caches it on disk, and memoises
the compiled module by canonical text.

Noiseless, a formula with a continuous output is solved only when it can be inverted:
:func:`inversion_problem` says why not (P >= 2, a flat piece, a jump), and a formula in z1 alone
gets the pre-image kernels (``preimage_moments``: the posterior on the roots of g(z1) = y).
"""
from __future__ import annotations

import ast
import hashlib
import itertools
import importlib.util
import math
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from ..errors import SpecError
from ..limits import (MAX_FORMULA_CONSTANT, MAX_FORMULA_DEPTH, MAX_FORMULA_EXPONENT, MAX_FORMULA_INDICES,
                      MAX_FORMULA_LENGTH, MAX_FORMULA_VALUES)
from ..quadrature import sobol_normals

FIELD = "link.formula"
# name -> (least, most arguments)
FUNCTIONS = {"abs": (1, 1), "sign": (1, 1), "tanh": (1, 1), "exp": (1, 1), "erf": (1, 1),
             "relu": (1, 1), "log1p": (1, 1), "sqrt": (1, 1), "min": (2, 4), "max": (2, 4),
             "where": (3, 3)}
NONNEGATIVE_ARGUMENT = ("log1p", "sqrt")
_VARIABLE = re.compile(r"z([1-9][0-9]*)")
_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}
_FLIP = {">": "<", ">=": "<="}
GRAMMAR = ("numbers; z1 .. z%d; + - * /; x ** c (constant |c| <= %g); comparisons < <= > >= == != "
           "(1 or 0); abs, sign, tanh, exp, erf, relu, min, max, where(c, a, b); log1p and sqrt of "
           "a non-negative argument (e.g. sqrt(abs(z1)))" % (MAX_FORMULA_INDICES, MAX_FORMULA_EXPONENT))
EXAMPLES = ("sign(z1*z2) + 0.5*tanh(z3)", "sign(sign(z1) + sign(z2) + sign(z3))",
            "where(abs(z1) < 1, 1, -1)", "z1**2 + relu(z2)", "z1*z2")


@dataclass(frozen=True)
class Node:
    """A node of the checked tree: op in num, var, neg, add, mul, div, pow, cmp, call.

    ``value`` holds the number (num), the index p (var, 0-based), the exponent (pow), the
    comparison operator (cmp) or the function name (call)."""

    op: str
    args: tuple = ()
    value: object = None
    column: int = field(default=0, compare=False)  # where it was written (for errors)


def _error(token: str, column: int, allowed: str) -> SpecError:
    return SpecError(FIELD, f"{token} (column {column})", allowed)


def _token(node: ast.AST, text: str) -> str:
    seg = ast.get_source_segment(text, node)
    return seg if seg is not None else type(node).__name__


# ---------------------------------------------------------------------------------------
# parse and check
# ---------------------------------------------------------------------------------------
def _number(node: ast.AST) -> float | None:
    """The value of a (possibly negated) numeric constant, else None."""
    sign = 1.0
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return sign * float(node.value)
    return None


def _build(node: ast.AST, text: str, depth: int) -> Node:
    col = getattr(node, "col_offset", 0) + 1
    if depth > MAX_FORMULA_DEPTH:
        raise _error(_token(node, text), col, f"a formula nested at most {MAX_FORMULA_DEPTH} deep")
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise _error(_token(node, text), col, "an expression of: " + GRAMMAR)
        x = float(node.value)
        if not (math.isfinite(x) and abs(x) <= MAX_FORMULA_CONSTANT):
            raise _error(_token(node, text), col, f"numbers with |x| <= {MAX_FORMULA_CONSTANT:g}")
        return Node("num", value=x)
    if isinstance(node, ast.Name):
        m = _VARIABLE.fullmatch(node.id)
        if m is None:
            raise _error(node.id, col, f"a variable z1 .. z{MAX_FORMULA_INDICES} or a call of "
                         + ", ".join(FUNCTIONS))
        p = int(m.group(1))
        if p > MAX_FORMULA_INDICES:
            raise _error(node.id, col, f"at most {MAX_FORMULA_INDICES} variables z1 .. z{MAX_FORMULA_INDICES}")
        return Node("var", value=p - 1)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        x = _build(node.operand, text, depth + 1)
        return Node("neg", (x,)) if isinstance(node.op, ast.USub) else x
    if isinstance(node, ast.BinOp):
        ops = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
        op = ops.get(type(node.op))
        if op is None:
            gap = text[node.left.end_col_offset:node.right.col_offset]
            sym = gap.strip().strip("()").strip() or type(node.op).__name__
            raise _error(sym, node.left.end_col_offset + len(gap) - len(gap.lstrip()) + 1,
                         "an operator among + - * / **")
        a = _build(node.left, text, depth + 1)
        if op == "pow":
            e = _number(node.right)
            if e is None or abs(e) > MAX_FORMULA_EXPONENT:
                raise _error(_token(node.right, text), node.right.col_offset + 1,
                             f"a constant exponent c with |c| <= {MAX_FORMULA_EXPONENT:g}")
            return Node("pow", (a,), e, node.right.col_offset + 1)
        b = _build(node.right, text, depth + 1)
        return Node(op, (a, b), column=node.right.col_offset + 1)
    if isinstance(node, ast.Compare):
        items = [_build(node.left, text, depth + 1)] + [_build(c, text, depth + 1) for c in node.comparators]
        parts = []
        for i, op in enumerate(node.ops):
            sym = _COMPARE.get(type(op))
            if sym is None:
                raise _error(type(op).__name__, col, "a comparison among < <= > >= == !=")
            parts.append(Node("cmp", (items[i], items[i + 1]), sym))
        return parts[0] if len(parts) == 1 else Node("mul", tuple(parts))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            raise _error(_token(node.func, text), node.func.col_offset + 1,
                         "a call of " + ", ".join(FUNCTIONS))
        name = node.func.id
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _error(_token(node, text), col, f"{name} with positional arguments only")
        lo, hi = FUNCTIONS[name]
        if not lo <= len(node.args) <= hi:
            raise _error(_token(node, text), col,
                         f"{name} with {lo}{'' if lo == hi else f' to {hi}'} argument{'s' * (hi > 1)}")
        args = tuple(_build(a, text, depth + 1) for a in node.args)
        if name in NONNEGATIVE_ARGUMENT and _interval(args[0])[0] < 0.0:
            raise _error(_token(node, text), col,
                         f"{name} of a provably non-negative argument, e.g. {name}(abs(...))")
        return Node("call", args, name)
    kind = type(node).__name__
    hint = " (write where(c, a, b))" if kind == "IfExp" else ""
    raise _error(_token(node, text), col, "an expression of: " + GRAMMAR + hint)


def _interval(n: Node) -> tuple[float, float]:
    """A conservative range [lo, hi] of node n over all z in R^P (interval arithmetic)."""
    inf = math.inf
    if n.op == "num":
        return n.value, n.value
    if n.op == "var":
        return -inf, inf
    iv = [_interval(a) for a in n.args]
    if n.op == "neg":
        return -iv[0][1], -iv[0][0]
    if n.op in ("add", "sub"):
        (a, b), (c, d) = iv
        return (a + c, b + d) if n.op == "add" else (a - d, b - c)
    if n.op == "mul":
        lo, hi = iv[0]
        for c, d in iv[1:]:
            ps = [_times(x, y) for x in (lo, hi) for y in (c, d)]
            lo, hi = min(ps), max(ps)
        return lo, hi
    if n.op == "div":
        (a, b), (c, d) = iv
        if c <= 0.0 <= d:
            return -inf, inf
        ps = [_times(x, 1.0 / y if math.isfinite(y) else 0.0) for x in (a, b) for y in (c, d)]
        return min(ps), max(ps)
    if n.op == "pow":
        e = n.value
        if float(e).is_integer() and int(e) % 2 == 0 and e > 0:
            return 0.0, inf
        return (0.0 if iv[0][0] >= 0.0 else -inf), inf
    if n.op == "cmp":
        return 0.0, 1.0
    name = n.value
    (a, b) = iv[0]
    if name == "abs":
        return (0.0 if a <= 0.0 <= b else min(abs(a), abs(b))), max(abs(a), abs(b))
    if name in ("sign", "tanh", "erf"):
        return -1.0, 1.0
    if name == "exp":
        return 0.0, inf
    if name == "relu":
        return max(a, 0.0), max(b, 0.0)
    if name in ("log1p", "sqrt"):
        return 0.0, inf
    if name == "min":
        return min(x[0] for x in iv), min(x[1] for x in iv)
    if name == "max":
        return max(x[0] for x in iv), max(x[1] for x in iv)
    if name == "where":
        return min(iv[1][0], iv[2][0]), max(iv[1][1], iv[2][1])
    raise AssertionError(name)  # pragma: no cover - the parser admits only FUNCTIONS


def _times(x: float, y: float) -> float:
    return 0.0 if x == 0.0 or y == 0.0 else x * y


def _check_divisions(n: Node, text: str) -> None:
    if n.op == "div":
        lo, hi = _interval(n.args[1])
        if lo <= 0.0 <= hi:
            raise _error(f"/ {render(n.args[1])}", n.column,
                            "a denominator that cannot be 0 (e.g. 1 + z1**2 or 1 + abs(z1)): "
                            "the formula would be infinite or NaN where it vanishes")
    if n.op == "pow" and n.value < 0:
        lo, hi = _interval(n.args[0])
        if lo <= 0.0 <= hi:
            raise _error(render(n), n.column, "a negative power of a base that cannot be 0 "
                            "(e.g. (1 + z1**2)**(-1))")
    for a in n.args:
        _check_divisions(a, text)


# ---------------------------------------------------------------------------------------
# canonical form
# ---------------------------------------------------------------------------------------
def canonical(n: Node) -> Node:
    """Sums and products flattened with sorted operands, a - b as a + (-b), --x as x,
    a > b as b < a, sorted operands of == != min max."""
    args = tuple(canonical(a) for a in n.args)
    if n.op == "neg":
        x = args[0]
        if x.op == "num":
            return Node("num", value=-x.value)
        if x.op == "neg":
            return x.args[0]
        return Node("neg", (x,))
    if n.op in ("add", "sub"):
        if n.op == "sub":
            args = (args[0], canonical(Node("neg", (args[1],))))
        flat = []
        for a in args:
            flat.extend(a.args if a.op == "add" else (a,))
        return Node("add", tuple(sorted(flat, key=_sort_key)))
    if n.op == "mul":
        flat = []
        for a in args:
            flat.extend(a.args if a.op == "mul" else (a,))
        return Node("mul", tuple(sorted(flat, key=_sort_key)))
    if n.op == "cmp":
        op, (a, b) = n.value, args
        if op in _FLIP:
            op, a, b = _FLIP[op], b, a
        if op in ("==", "!=") and render(b) < render(a):
            a, b = b, a
        return Node("cmp", (a, b), op)
    if n.op == "call" and n.value in ("min", "max"):
        return Node("call", tuple(sorted(args, key=_sort_key)), n.value)
    return Node(n.op, args, n.value, n.column)


def _sort_key(n: Node) -> tuple:
    # numbers last in sums and products ("z1 + 1", "0.5*tanh(z3)" reads better with them first
    # for products): negations sort by their operand, so "z1 - z2" stays in that order
    base = n.args[0] if n.op == "neg" else n
    return (base.op == "num", render(base), n.op == "neg")


def _num(x: float) -> str:
    return repr(float(x))


def render(n: Node, target: str = "text") -> str:
    """The canonical text (``target="text"``, re-parseable) or numba source: ``"numba"`` (of an
    array z) or ``"scalar"`` (of one number x, for formulas in z1 alone)."""
    r = lambda a: render(a, target)  # noqa: E731

    def atom(a):
        s = r(a)
        return s if a.op in ("var", "call") or (a.op == "num" and a.value >= 0) else f"({s})"

    if n.op == "num":
        return _num(n.value)
    if n.op == "var":
        return {"text": f"z{n.value + 1}", "scalar": "x"}.get(target, f"z[{n.value}]")
    if n.op == "neg":
        return "-" + atom(n.args[0])
    if n.op == "add":
        out = r(n.args[0]) if n.args[0].op != "add" else atom(n.args[0])
        for a in n.args[1:]:
            out += f" - {atom(a.args[0])}" if a.op == "neg" else f" + {atom(a) if a.op == 'cmp' else r(a)}"
        return out
    if n.op == "mul":
        nums = [a for a in n.args if a.op == "num"]
        rest = [a for a in n.args if a.op != "num"]
        return "*".join(atom(a) for a in nums + rest)
    if n.op == "div":
        return f"{atom(n.args[0])}/{atom(n.args[1])}"
    if n.op == "pow":
        e = n.value
        es = str(int(e)) if float(e).is_integer() else _num(e)
        return f"{atom(n.args[0])}**{es if e >= 0 else '(' + es + ')'}"
    if n.op == "cmp":
        a, b = r(n.args[0]), r(n.args[1])
        if target == "text":
            return f"{atom(n.args[0])} {n.value} {atom(n.args[1])}"
        return f"(1.0 if ({a}) {n.value} ({b}) else 0.0)"
    name, args = n.value, [r(a) for a in n.args]
    if target == "text":
        return f"{name}({', '.join(args)})"
    if name == "where":
        return f"(({args[1]}) if ({args[0]}) != 0.0 else ({args[2]}))"
    fn = {"abs": "abs", "sign": "_sign", "relu": "_relu", "min": "min", "max": "max"}.get(name, "math." + name)
    return f"{fn}({', '.join(args)})"


def _depth(n: Node) -> int:
    return 1 + max((_depth(a) for a in n.args), default=0)


def _max_index(n: Node) -> int:
    own = n.value + 1 if n.op == "var" else 0
    return max([own] + [_max_index(a) for a in n.args])


def _finite_valued(n: Node) -> bool:
    """Structurally finite-valued: built from numbers, sign and comparisons only (any function
    of finitely many values has finitely many values)."""
    if n.op == "num":
        return True
    if n.op == "var":
        return False
    if n.op == "cmp" or (n.op == "call" and n.value == "sign"):
        return True
    if n.op == "call" and n.value == "where":
        return _finite_valued(n.args[1]) and _finite_valued(n.args[2])
    return all(_finite_valued(a) for a in n.args)


@dataclass(frozen=True)
class Formula:
    """A checked formula: ``text`` is its canonical form, ``n_indices`` = P (the largest
    variable index), ``tree`` the canonical tree, ``finite_valued`` whether it takes finitely
    many values (structurally: numbers, sign and comparisons combined)."""

    text: str
    n_indices: int
    tree: Node
    finite_valued: bool


def parse_formula(text) -> Formula:
    """Parse and check a user formula (raises :class:`SpecError` on ``link.formula``)."""
    if not isinstance(text, str):
        raise SpecError(FIELD, text, "a string such as " + repr(EXAMPLES[0]))
    return _parse(text)


@lru_cache(maxsize=1024)
def _parse(text: str) -> Formula:  # pure: memoised (errors are raised again on every call)
    if len(text) > MAX_FORMULA_LENGTH:
        raise SpecError(FIELD, text[:40] + "...", f"at most {MAX_FORMULA_LENGTH} characters "
                        f"(this one has {len(text)})")
    if not text.strip():
        raise SpecError(FIELD, text, "a formula such as " + repr(EXAMPLES[0]))
    try:
        body = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        stripped = text.strip()
        col = min(max(exc.offset or 1, 1), len(stripped) + 1)
        bad = stripped[col - 1:col + 9] or "end of text"
        raise _error(bad, col, "a well-formed expression: " + GRAMMAR) from None
    except (RecursionError, MemoryError, ValueError):
        raise SpecError(FIELD, text[:40], f"a formula nested at most {MAX_FORMULA_DEPTH} deep") from None
    tree = canonical(_build(body, text.strip(), 1))
    _check_divisions(tree, text)
    P = _max_index(tree)
    if P == 0:
        raise SpecError(FIELD, text, "a formula of at least one variable z1 .. z%d" % MAX_FORMULA_INDICES)
    return Formula(render(tree), P, tree, _finite_valued(tree))


# ---------------------------------------------------------------------------------------
# code generation and compilation
# ---------------------------------------------------------------------------------------
_TEMPLATE = '''"""Generated from the checked formula {text!r} (solvers/channels/formula.py)."""
import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _sign(x):
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


@njit(cache=True, nogil=True)
def _relu(x):
    return x if x > 0.0 else 0.0


@njit(cache=True, nogil=True)
def value(z):
    return float({expr})


@njit(cache=True, nogil=True)
def link(Z):
    """One sample, Z (P, 1) -> (1,) (the NoisyChannel convention)."""
    out = np.empty(1)
    out[0] = value(Z[:, 0])
    return out


@njit(cache=True, nogil=True)
def batch(z):
    """z (n, P) -> g (n,)."""
    n = z.shape[0]
    out = np.empty(n)
    for i in range(n):
        out[i] = value(z[i])
    return out


@njit(cache=True, nogil=True)
def _region_sums(y_i, omega_i, S, T, Vinv, Winv, logdet_ratio, U, tol, wide):
    """Weighted sums (s0, sum w^2, s1, s2) of d = z - omega_i over the bank points in the
    region |g(z) - y_i| <= tol (1 + |y_i|).  Prior proposal omega_i + S u (weight 1); with
    ``wide``, also omega_i + T u, both weighted by the balance heuristic
    prior / (prior / 2 + wide / 2) (T = (V + I)^1/2)."""
    K, P = U.shape
    z = np.empty(P)
    d = np.empty(P)
    s0 = 0.0
    s2w = 0.0
    s1 = np.zeros(P)
    s2 = np.zeros((P, P))
    for k in range(K):
        for src in range(2 if wide else 1):
            M = S if src == 0 else T
            for p in range(P):
                acc = 0.0
                for q in range(P):
                    acc += M[p, q] * U[k, q]
                d[p] = acc
                z[p] = omega_i[p] + acc
            if abs(value(z) - y_i) > tol * (1.0 + abs(y_i)):
                continue
            w = 1.0
            if wide:
                qv = 0.0
                qw = 0.0
                for p in range(P):
                    for q in range(P):
                        qv += d[p] * Vinv[p, q] * d[q]
                        qw += d[p] * Winv[p, q] * d[q]
                w = 2.0 / (1.0 + math.exp(-0.5 * (qw - qv) + 0.5 * logdet_ratio))
            s0 += w
            s2w += w * w
            for p in range(P):
                s1[p] += w * d[p]
                for q in range(P):
                    s2[p, q] += w * d[p] * d[q]
    return s0, s2w, s1, s2


@njit(cache=True, nogil=True)
def region_moments(y, omega, S, T, Vinv, Winv, logdet_ratio, U, tol, min_hits):
    """Moments of N(omega_i, V) restricted to {{z : |g(z) - y_i| <= tol (1 + |y_i|)}}.

    Importance sampling over the bank U (K, P): the prior proposal alone (so moment-matched,
    symmetric banks give exact moments where the symmetries fix them); when fewer than
    ``min_hits`` bank points land in the region, again with the wider proposal added.
    Returns mean (n, P), cov (n, P, P), log P(region) (n,) and the Kish ESS (n,)."""
    n, P = omega.shape
    K = U.shape[0]
    mean = np.zeros((n, P))
    cov = np.zeros((n, P, P))
    logz = np.zeros(n)
    ess = np.zeros(n)
    for i in range(n):
        s0, s2w, s1, s2 = _region_sums(y[i], omega[i], S, T, Vinv, Winv, logdet_ratio, U, tol, False)
        draws = K
        if s0 < min_hits:
            s0, s2w, s1, s2 = _region_sums(y[i], omega[i], S, T, Vinv, Winv, logdet_ratio, U, tol, True)
            draws = 2 * K
        if s0 == 0.0:
            for p in range(P):
                mean[i, p] = omega[i, p]
                for q in range(P):
                    acc = 0.0
                    for r in range(P):
                        acc += S[p, r] * S[q, r]
                    cov[i, p, q] = acc  # no point in the region: the prior, flagged by ess = 0
            logz[i] = -np.inf
            continue
        for p in range(P):
            mean[i, p] = omega[i, p] + s1[p] / s0
        for p in range(P):
            for q in range(P):
                cov[i, p, q] = s2[p, q] / s0 - (s1[p] / s0) * (s1[q] / s0)
        logz[i] = math.log(s0 / draws)
        # the wide proposal's weights can be so small that their squares underflow to 0
        ess[i] = s0 * s0 / s2w if s2w > 0.0 else 1.0
    return mean, cov, logz, ess
'''

# Formulas in z1 alone get the pre-image kernels too (noiseless continuous outputs, solved by
# inverting y = g(z1): multi_index.FormulaChannel).
_PREIMAGE_TEMPLATE = '''

GOLDEN_STEPS = 60  # golden-section steps: the bracket shrinks 0.618^60 = 3e-13 times
ROOT_STEPS = 200  # at most (the Illinois method converges superlinearly: far fewer)
ROOT_TOLERANCE = 1e-12  # of the bracket, relative to the grid's cell
WIDENINGS = 3  # no root in the window: widen it 4x, at most this many times


@njit(cache=True, nogil=True, inline="always")
def g1(x):
    """g at the number x (the expression of value, so the teacher's z is a root of g1 - y)."""
    return float({scalar})


@njit(cache=True, nogil=True)
def _extremum(a, b, sense, y):
    """Golden-section search for the extremum of g - y on [a, b] (a minimum for sense = 1, a
    maximum for sense = -1): returns (x, g(x) - y)."""
    r = 0.6180339887498949
    c = b - r * (b - a)
    d = a + r * (b - a)
    fc = sense * (g1(c) - y)
    fd = sense * (g1(d) - y)
    for _ in range(GOLDEN_STEPS):
        if fc < fd:
            b = d
            d = c
            fd = fc
            c = b - r * (b - a)
            fc = sense * (g1(c) - y)
        else:
            a = c
            c = d
            fc = fd
            d = a + r * (b - a)
            fd = sense * (g1(d) - y)
    x = c if fc < fd else d
    return x, g1(x) - y


@njit(cache=True, nogil=True)
def _bracketed_root(a, fa, b, fb, y, tol):
    """The root of g - y in [a, b] (fa = g(a) - y and fb of opposite signs): the Illinois
    method (regula falsi halving the weight of an end kept twice), which keeps the bracket,
    until the bracket is under tol, a step lands on an exact zero or no float lies between."""
    side = 0
    c = 0.5 * (a + b)
    for _ in range(ROOT_STEPS):
        c = (a * fb - b * fa) / (fb - fa)
        if not (a < c < b):
            c = 0.5 * (a + b)
            if not (a < c < b):
                break
        fc = g1(c) - y
        if fc == 0.0:
            return c
        if (fc < 0.0) == (fb < 0.0):
            b = c
            fb = fc
            if side == -1:
                fa *= 0.5
            side = -1
        else:
            a = c
            fa = fc
            if side == 1:
                fb *= 0.5
            side = 1
        if b - a <= tol:
            break
    return c


@njit(cache=True, nogil=True)
def preimage(y, lo, hi, cells, roots, xs, fs):
    """The points of {{x in [lo, hi] : g(x) = y}} into roots; returns how many.

    g - y on a grid of ``cells`` cells; every grid point where its differences change sign (a
    local extremum of g nearby) gets the extremum of the two cells around it inserted
    (golden section), so two roots closer than a cell (either side of an extremum) are still
    bracketed; then every sign change between consecutive points is solved and every exact
    zero is a root (a tangency: one root, where g' = 0).  xs, fs: work arrays of 2 (cells + 1)."""
    n = cells + 1
    h = (hi - lo) / cells
    for k in range(n):
        xs[k] = lo + h * k
        fs[k] = g1(xs[k]) - y
    m = n
    for k in range(1, n - 1):
        left = fs[k] - fs[k - 1]
        right = fs[k + 1] - fs[k]
        if left * right < 0.0:
            sense = 1.0 if left < 0.0 else -1.0
            xs[m], fs[m] = _extremum(xs[k - 1], xs[k + 1], sense, y)
            m += 1
    if m > n:
        order = np.argsort(xs[:m], kind="mergesort")
        xs[:m] = xs[:m][order]
        fs[:m] = fs[:m][order]
    count = 0
    for k in range(m):
        if fs[k] == 0.0:
            if count == 0 or xs[k] > roots[count - 1]:
                roots[count] = xs[k]
                count += 1
        elif k + 1 < m and fs[k] * fs[k + 1] < 0.0:
            roots[count] = _bracketed_root(xs[k], fs[k], xs[k + 1], fs[k + 1], y, ROOT_TOLERANCE * h)
            count += 1
    return count


@njit(cache=True, nogil=True)
def preimage_moments(y, omega, v, cells, span, step):
    """Posterior moments of z ~ N(omega_i, v) given g(z) = y_i (noiseless, g in z1 alone).

    The pre-image is the finite set of roots z_k of g(z) = y_i, searched on
    [omega_i - span sd, omega_i + span sd] (sd = v^1/2; widened 4x, three times, if empty), and
    the posterior is discrete (the density of y is a sum over the roots, y = g(z)):
        P(z_k | y) = N(z_k; omega, v) / |g'(z_k)| / Z,  Z = sum_k N(z_k; omega, v) / |g'(z_k)|,
    with g' by centred differences of step ``step`` (1 + |z_k|).  Returns mean (n,), var (n,),
    log Z (n,) (-inf, with the prior's moments, when no root is found) and the roots' count."""
    n = y.shape[0]
    mean = np.empty(n)
    var = np.empty(n)
    logz = np.empty(n)
    found = np.zeros(n, dtype=np.int64)
    roots = np.empty(2 * (cells + 1))
    logw = np.empty(2 * (cells + 1))
    xs = np.empty(2 * (cells + 1))
    fs = np.empty(2 * (cells + 1))
    sd = math.sqrt(v)
    for i in range(n):
        count = 0
        width = span * sd
        for _ in range(WIDENINGS + 1):
            count = preimage(y[i], omega[i] - width, omega[i] + width, cells, roots, xs, fs)
            if count > 0:
                break
            width *= 4.0
        found[i] = count
        if count == 0:
            mean[i] = omega[i]
            var[i] = v
            logz[i] = -np.inf
            continue
        top = -np.inf
        for k in range(count):
            x = roots[k]
            dx = step * (1.0 + abs(x))
            slope = abs(g1(x + dx) - g1(x - dx)) / (2.0 * dx)
            logw[k] = -0.5 * (x - omega[i]) ** 2 / v - math.log(max(slope, 1e-300))
            top = max(top, logw[k])
        total = 0.0
        first = 0.0
        for k in range(count):
            logw[k] = math.exp(logw[k] - top)
            total += logw[k]
            first += logw[k] * roots[k]
        mu = first / total
        second = 0.0
        for k in range(count):
            second += logw[k] * (roots[k] - mu) ** 2
        mean[i] = mu
        var[i] = second / total
        logz[i] = top + math.log(total) - 0.5 * math.log(2.0 * math.pi * v)
    return mean, var, logz, found
'''



def formula_directory() -> str:
    """Where generated formula modules live (numba caches their kernels next to them)."""
    d = os.environ.get("STAIRCASE_FORMULA_DIR") or os.path.join(
        tempfile.gettempdir(), f"staircase-formulas-{os.getuid() if hasattr(os, 'getuid') else 0}")
    os.makedirs(d, exist_ok=True)
    return d


def module_source(formula: Formula) -> str:
    """The numba source of a formula: the template with the checked tree rendered for numba
    (and, for a formula in z1 alone, the pre-image kernels)."""
    source = _TEMPLATE.format(text=formula.text, expr=render(formula.tree, "numba"))
    if formula.n_indices == 1:
        source += _PREIMAGE_TEMPLATE.format(scalar=render(formula.tree, "scalar"))
    return source


@lru_cache(maxsize=256)
def compile_formula(text: str):
    """The compiled module (value, link, batch, region_moments; for a formula in z1 alone also
    g1 and preimage_moments) of a canonical formula text, memoised by that text in this process
    and cached by numba on disk."""
    formula = parse_formula(text)
    source = module_source(formula)
    digest = hashlib.sha256(source.encode()).hexdigest()[:20]
    name = f"staircase_formula_{digest}"
    path = os.path.join(formula_directory(), name + ".py")
    if not os.path.exists(path):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as fh:
            fh.write(source)
        os.replace(tmp, path)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # numba's cache locates functions through their module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------
# facts found by probing
# ---------------------------------------------------------------------------------------
PROBE_POINTS = 1 << 14
PROBE_SEED = 12  # fixed: the facts of a formula never change between runs


@dataclass(frozen=True)
class FormulaFacts:
    """Facts of a checked formula found on a probe sample (2^14 scrambled-Sobol normal points
    and the same points scaled by 4, to reach the tails): its distinct values when finitely
    many (sorted), which rows z_p -> -z_p leave it unchanged, which change its sign
    (``row_flip_odd``), and every signed permutation z -> signs * z[perm] that leaves it
    unchanged (at most 2^4 4! = 384 tried); "unchanged" is exact for finitely many values, to
    1e-9 relative otherwise."""

    values: tuple[float, ...] | None
    row_flip_symmetric: tuple[bool, ...]
    row_flip_odd: tuple[bool, ...]
    symmetries: tuple[tuple[tuple[int, ...], tuple[float, ...]], ...] = ()

    @property
    def permutation_symmetric(self) -> bool:
        """Every permutation of the variables, with some sign pattern, leaves g unchanged."""
        P = len(self.row_flip_symmetric)
        perms = {perm for perm, _ in self.symmetries} | {tuple(range(P))}
        return len(perms) == math.factorial(P)

    def symmetric_bank(self, base: np.ndarray) -> np.ndarray:
        """The points base (n, P) closed under the formula's symmetries and z -> -z: a bank
        whose importance estimates keep every exact symmetry of the posterior at Q = 0 (so
        that, e.g., E[z | y] of the committee stays exactly along (1, 1, 1) and bank noise
        cannot fake a learnable direction).  Each element (perm, signs) maps z to
        signs * z[perm]."""
        group = set(self.symmetries) | {(tuple(range(base.shape[1])), (1.0,) * base.shape[1])}
        group |= {(perm, tuple(-s for s in signs)) for perm, signs in group}
        parts = [base[:, list(perm)] * np.asarray(signs) for perm, signs in sorted(group)]
        return np.ascontiguousarray(np.concatenate(parts, axis=0))


@lru_cache(maxsize=256)
def formula_facts(text: str) -> FormulaFacts:
    formula = parse_formula(text)
    module = compile_formula(formula.text)
    P = formula.n_indices
    z = sobol_normals(PROBE_POINTS, P, PROBE_SEED)
    z = np.ascontiguousarray(np.concatenate([z, 4.0 * z], axis=0))
    g = module.batch(z)
    if not np.all(np.isfinite(g)):
        k = int(np.flatnonzero(~np.isfinite(g))[0])
        at = ", ".join(f"z{p + 1}={z[k, p]:.3g}" for p in range(P))
        raise SpecError(FIELD, formula.text, f"a formula finite for every z (it is {g[k]} at {at})")
    values = None
    if formula.finite_valued:
        distinct = np.unique(g)
        if len(distinct) > MAX_FORMULA_VALUES:
            raise SpecError(FIELD, formula.text, f"a formula with at most {MAX_FORMULA_VALUES} distinct values "
                            f"when noiseless (this one has {len(distinct)}); or give a noise level")
        values = tuple(float(v) for v in distinct)
    scale = max(1.0, float(np.max(np.abs(g))))

    def invariant(perm, signs, parity=1.0) -> bool:
        """g(signs * z[perm]) = parity * g(z) on the probe."""
        gt = module.batch(np.ascontiguousarray(z[:, list(perm)] * np.asarray(signs)))
        return bool(np.array_equal(gt, parity * g)) if values is not None else bool(
            np.max(np.abs(gt - parity * g)) <= 1e-9 * scale)

    identity = tuple(range(P))
    row_flips = [(identity, tuple(-1.0 if q == p else 1.0 for q in range(P))) for p in range(P)]
    flips = tuple(invariant(*flip) for flip in row_flips)
    odd = tuple(invariant(*flip, parity=-1.0) for flip in row_flips)
    symmetries = tuple((perm, signs) for perm in itertools.permutations(range(P))
                       for signs in itertools.product((1.0, -1.0), repeat=P)
                       if (perm, signs) != (identity, (1.0,) * P) and invariant(perm, signs))
    return FormulaFacts(values, flips, odd, symmetries)


# ---------------------------------------------------------------------------------------
# invertibility of a noiseless continuous output
# ---------------------------------------------------------------------------------------
INVERSION_PROBE_RANGE = 5.0  # |z1| <= 5 holds all but 6e-7 of N(0, 1), the law of z in SE
INVERSION_PROBE_CELLS = 1 << 16
# a cell that keeps a difference over this (times 1 + max |g|) when halved to the last bit of z
# is a jump: a continuous g with slope L keeps about L x 9e-16 there (steeper than ~1e6 reads
# as a jump)
JUMP_TOLERANCE = 1e-9
JUMP_HALVINGS = 64


def _may_jump(n: Node) -> bool:
    """Structurally possibly discontinuous: contains sign, a comparison or where."""
    if n.op == "cmp" or (n.op == "call" and n.value in ("sign", "where")):
        return True
    return any(_may_jump(a) for a in n.args)


@lru_cache(maxsize=256)
def inversion_problem(text: str) -> str | None:
    """Why the noiseless output y = g(z) of a formula cannot be inverted to finitely many
    points, or None when it can: g in z1 alone, continuous and nowhere flat.

    The posterior of z given y = g(z) is then discrete, on the roots of g(z) = y (solved by
    ``preimage_moments`` of the compiled module).  Refused: a formula in P >= 2 variables (the
    pre-image is a curve or surface); a flat piece (g constant on an interval: that value of y
    has positive probability and a continuum of pre-images, as relu(z1) at 0); a jump
    (sign, comparisons, where: the output has no density there).  Both are found on a fixed
    grid of 2^16 cells over |z1| <= 5 (offset, so no cell is symmetric about 0): a flat piece
    is three equal consecutive values (narrower than two cells, 3e-4, is not seen); a jump is
    a cell whose difference stays above JUMP_TOLERANCE when halved towards it to the last bit."""
    formula = parse_formula(text)
    if formula.n_indices != 1:
        return (f"a formula in {formula.n_indices} variables has a curve or surface of pre-images "
                "{z : g(z) = y}, not finitely many points")
    module = compile_formula(formula.text)
    h = 2.0 * INVERSION_PROBE_RANGE / INVERSION_PROBE_CELLS
    x = -INVERSION_PROBE_RANGE + h * (np.arange(INVERSION_PROBE_CELLS + 1) + 0.381966)
    g = module.batch(np.ascontiguousarray(x[:, None]))
    flat = np.flatnonzero((g[1:-1] == g[:-2]) & (g[2:] == g[1:-1]))
    if len(flat):
        first = last = int(flat[0]) + 1
        while last + 1 < len(g) and g[last + 1] == g[first]:
            last += 1
        lo = "-inf" if first == 1 else _place(x[first - 1])  # a run to the probe's edge: the tail
        hi = "inf" if last == len(g) - 1 else _place(x[last])
        return (f"it is flat (g = {g[first]:.6g} for z1 in [{lo}, {hi}]): that value of y has positive "
                "probability and a continuum of pre-images")
    if _may_jump(formula.tree):
        lo, hi, glo, ghi = x[:-1], x[1:], g[:-1], g[1:]
        for _ in range(JUMP_HALVINGS):
            mid = 0.5 * (lo + hi)
            gm = module.batch(np.ascontiguousarray(mid[:, None]))
            left = np.abs(gm - glo) >= np.abs(ghi - gm)
            lo, glo = np.where(left, lo, mid), np.where(left, glo, gm)
            hi, ghi = np.where(left, mid, hi), np.where(left, gm, ghi)
        jumps = np.flatnonzero(np.abs(ghi - glo) > JUMP_TOLERANCE * (1.0 + np.max(np.abs(g))))
        if len(jumps):
            k = int(jumps[0])
            return (f"it jumps at z1 = {_place(lo[k])} (from {glo[k]:.6g} to {ghi[k]:.6g}): the output "
                    "has no density there")
    return None


def _place(x: float) -> str:
    """A probe grid point for a message, to 4 digits (0, not 1e-24, at a jump at 0)."""
    return f"{float(np.round(x, 3)) + 0.0:.4g}"
