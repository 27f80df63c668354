"""Pictures of a sweep (matplotlib, Agg): a phase diagram or overlap curves; of a comparison:
the user's points over the theory's error curves.  No I/O.

* thresholds sweep: alpha against the swept parameter, one threshold curve per layer, the
  regions between the curves shaded by how many layers are learned there;
* state-evolution sweep: overlap per layer against alpha (one set of curves per parameter
  value), with the thresholds of each layer marked by dotted vertical lines.

Points not finished yet are left out, so a running sweep plots its partial results.

matplotlib is not imported with this module: :func:`load` imports it, which takes seconds on a
cold machine (the font cache is built on the first import), and the app's lifespan runs it in
a thread at startup, so neither the import nor a first plot holds up the event loop.
"""
from __future__ import annotations

import io
import math
import threading

from .render import threshold_label

LABELS = {"skip": "skip strength c", "beta": r"inverse temperature $\beta$", "noise": r"noise $\Delta$",
          "tokens": "tokens M", "layers": "layers L"}


# set by load(): the matplotlib module and its Figure class
matplotlib = None
Figure = None
_loading = threading.Lock()


def load() -> None:
    """Import matplotlib (Agg) and draw a small figure to PNG and SVG once (fonts, mathtext,
    both backends).  Idempotent and thread-safe; :func:`render` calls it too."""
    global matplotlib, Figure
    with _loading:
        if Figure is not None:
            return
        import matplotlib as mpl  # here, not at import: seconds; run in a thread at startup

        mpl.use("Agg")
        from matplotlib.figure import Figure as figure_class  # after use("Agg"), as above

        fig = figure_class(figsize=(2, 2))
        fig.add_subplot(111).set_xlabel(r"sample ratio $\alpha = N/D$")
        for fmt in ("png", "svg"):
            fig.savefig(io.BytesIO(), format=fmt)
        matplotlib, Figure = mpl, figure_class


def _threshold_series(points: list[dict]) -> tuple[list[float], dict[str, list[float]]]:
    """x values and, per layer label, the threshold alpha at each x (nan: not finished/never)."""
    xs, rows = [], []
    for p in points:
        if p["kind"] != "thresholds" or p["status"] != "done" or p.get("result") is None:
            continue
        xs.append(p["value"] if p["value"] is not None else 0.0)
        rows.append({threshold_label(t, j): (math.inf if t["alpha"] is None else t["alpha"])
                     for j, t in enumerate(p["result"]["thresholds"])})
    labels = sorted({k for r in rows for k in r})
    order = sorted(range(len(xs)), key=lambda k: xs[k])
    xs = [xs[k] for k in order]
    series = {lab: [rows[k].get(lab, math.nan) for k in order] for lab in labels}
    return xs, series


def phase_diagram(body: dict, fig) -> None:
    res = body["result"]
    param = res.get("parameter")
    ax = fig.add_subplot(111)
    xs, series = _threshold_series(res["points"])
    model = body["request"]["model"]
    if xs:
        finite = [a for s in series.values() for a in s if math.isfinite(a)]
        top = 1.25 * max(finite) if finite else 1.0
        n = len(series)
        # sorted thresholds at each x: region k lies between the k-th and (k+1)-th
        cols = [sorted(min(s[k], top) if not math.isnan(s[k]) else top for s in series.values())
                for k in range(len(xs))]
        bounds = [[0.0] * len(xs)] + [[c[j] for c in cols] for j in range(n)] + [[top] * len(xs)]
        cmap = matplotlib.colormaps["Blues"]
        for k in range(n + 1):
            ax.fill_between(xs, bounds[k], bounds[k + 1], color=cmap(0.12 + 0.6 * k / max(n, 1)),
                            alpha=0.8, linewidth=0, label=f"{k} learned")
        for j, (lab, s) in enumerate(series.items()):
            ys = [a if math.isfinite(a) else math.nan for a in s]
            ax.plot(xs, ys, marker="o", color=f"C{j + 1}", lw=2, label=f"threshold, {lab}")
        ax.set_ylim(0, top)
        ax.set_xlim(min(xs), max(xs)) if len(xs) > 1 else None
    ax.set_xlabel(LABELS.get(param, param or "parameter"))
    ax.set_ylabel(r"sample ratio $\alpha = N/D$")
    desc = ", ".join(f"{k}={v}" for k, v in model.items() if k != param and v is not None)
    done = sum(p["status"] == "done" for p in res["points"])
    ax.set_title(f"Phase diagram ({done}/{len(res['points'])} points): {desc}", fontsize=9)
    ax.legend(loc="upper left", fontsize=8, framealpha=0.9)


def overlap_curves(body: dict, fig) -> None:
    res = body["result"]
    param = res.get("parameter")
    ax = fig.add_subplot(111)
    se = [p for p in res["points"] if p["kind"] == "state_evolution" and p["status"] == "done"
          and p.get("result")]
    values = sorted({p["value"] for p in se}, key=lambda v: (v is None, v))
    styles = ["-", "--", "-.", ":"]
    for vi, v in enumerate(values):
        pts = sorted((p for p in se if p["value"] == v), key=lambda p: p["alpha"])
        nl = max(len(p["result"]["uninformed"]["layer_overlaps"]) for p in pts)
        for layer in range(nl):
            a = [p["alpha"] for p in pts]
            q = [p["result"]["uninformed"]["layer_overlaps"][layer]
                 if layer < len(p["result"]["uninformed"]["layer_overlaps"]) else math.nan for p in pts]
            name = f"layer {layer + 1}" + ("" if v is None else f", {param}={v:g}")
            ax.plot(a, q, styles[vi % len(styles)], marker=".", color=f"C{layer}", label=name)
    marked = False
    for p in res["points"]:
        if p["kind"] != "thresholds" or p["status"] != "done" or not p.get("result"):
            continue
        for j, t in enumerate(p["result"]["thresholds"]):
            if t["alpha"] is None:
                continue
            layer = (t.get("layer") or j + 1) - 1
            ax.axvline(t["alpha"], color=f"C{layer}", ls=":", lw=1.2,
                       label=None if marked and len(values) > 1 else
                       f"threshold, {threshold_label(t, j)}" + ("" if p["value"] is None else f", {param}={p['value']:g}"))
        marked = True
    ax.set_xlabel(r"sample ratio $\alpha = N/D$")
    ax.set_ylabel("overlap with the teacher (uninformed start)")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("State evolution: " + ", ".join(f"{k}={v}" for k, v in body["request"]["model"].items()
                                                  if k != param and v is not None), fontsize=9)
    ax.legend(loc="best", fontsize=8)


def comparison(body: dict, fig) -> None:
    """The user's points (with their error bars) over the theory's error curves against the
    number of samples N = alpha D: Bayes-optimal and AMP with their 95% bands, the thresholds
    as dotted verticals, the user's sharpest drop shaded.  Before the theory is done: the
    user's points alone."""
    ax = fig.add_subplot(111)
    req, res = body["request"], body["result"]
    if res is not None:
        th = res["theory"]
        n = th["samples"]
        for name, color, label in (("bayes_optimal", "C0", "Bayes-optimal (SE)"), ("amp", "C1", "AMP (SE)")):
            e, h = th[name], th[name + "_ci95"]
            ax.plot(n, e, "-" if name == "bayes_optimal" else "--", color=color, lw=2, label=label)
            ax.fill_between(n, [a - b for a, b in zip(e, h)], [a + b for a, b in zip(e, h)], color=color,
                            alpha=0.2, linewidth=0)
        for j, t in enumerate(res["thresholds"]):
            if t["samples"] and n[0] <= t["samples"] <= n[-1]:
                ax.axvline(t["samples"], color=f"C{j + 3}", ls=":" if t["kind"] == "weak_recovery" else "-.",
                           lw=1.5, label=t["label"] if t["kind"] != "weak_recovery" else f"threshold, {t['label']}")
        drop = res["summary"]["sharpest_drop"]
        if drop is not None:
            ax.axvspan(drop["samples_from"], drop["samples_to"], color="0.85", zorder=0,
                       label="your sharpest drop")
    pts = sorted(req["points"], key=lambda p: p["samples"])
    ax.errorbar([p["samples"] for p in pts], [p["test_error"] for p in pts],
                yerr=[p.get("error_bar") or 0.0 for p in pts], fmt="o", color="k", ms=5, capsize=3,
                label="your measurements")
    ax.set_xscale("log")
    ax.set_xlabel(f"training samples N (D = {req['dimension']})")
    ax.set_ylabel(f"test error ({req['metric']})")
    model = ", ".join(f"{k}={v}" for k, v in req["model"].items() if v is not None)
    state = "" if res is not None else f" (theory: {body['progress']['done']}/{body['progress']['total']} points)"
    ax.set_title(f"Your curve against the theory: {model}{state}", fontsize=9)
    ax.legend(loc="best", fontsize=8)


def render(body: dict, fmt: str) -> bytes:
    """PNG or SVG bytes of a sweep's or a comparison's job body (service.sweeps.view)."""
    load()
    fig = Figure(figsize=(7.5, 5.0), dpi=110)
    if body["kind"] == "comparison":
        comparison(body, fig)
    elif body["result"]["compute"] == "thresholds":
        phase_diagram(body, fig)
    else:
        overlap_curves(body, fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()
