"""``--format table``: an answer as readable tables (rich), one layout per verb; anything else
(a job record, a comparison) as its top-level fields."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def num(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.6g}"
    if isinstance(x, list):
        return "[" + ", ".join(num(v) for v in x) + "]"
    return str(x)


def pm(value, half_width) -> str:
    return num(value) if half_width is None else f"{num(value)} ± {num(half_width)}"


def _table(title: str, columns: list[str], rows: list[list[Any]], caption: str = "") -> Table:
    t = Table(title=title, caption=caption or None)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[v if isinstance(v, str) else num(v) for v in r])
    return t


def _model(body: dict) -> str:
    m = body.get("model") or {}
    return ", ".join(f"{k}={num(v)}" for k, v in m.items())


def thresholds(body: dict) -> list[Table]:
    rows = [[e.get("layer") if e.get("layer") is not None else num(e.get("direction")),
             pm(e["alpha"], e.get("ci95")), e["kind"], e.get("samples_needed"), e.get("reason") or ""]
            for e in body["thresholds"]]
    caption = ("perfect recovery at alpha = "
               + pm(body.get("perfect_recovery_alpha"), body.get("perfect_recovery_ci95")))
    return [_table(f"thresholds: {_model(body)} ({body['precision']})",
                   ["layer / direction", "alpha", "kind", "samples", "note"], rows, caption)]


def state_evolution(body: dict) -> list[Table]:
    rows = [[p["alpha"], pm(p["uninformed"]["layer_overlaps"], None),
             pm(p["informed"]["layer_overlaps"], None), p["bayes_optimal"], p["gap"]]
            for p in body["points"]]
    return [_table(f"state evolution: {_model(body)} ({body['precision']})",
                   ["alpha", "uninformed overlaps", "informed overlaps", "Bayes-optimal", "gap"], rows)]


def sample_size(body: dict) -> list[Table]:
    target = ", ".join(f"{k}={num(v)}" for k, v in body["target"].items())
    return [_table(f"sample size: {_model(body)} ({body['precision']})",
                   ["target", "dimension", "alpha", "samples"],
                   [[target, body["dimension"], pm(body["alpha"], body.get("ci95")), body["samples"]]])]


def amp_simulation(body: dict) -> list[Table]:
    se = body["state_evolution"]
    error = pm(body["prediction_error_mean"], body["prediction_error_std"])
    rows = [[name, pm(body["final_layer_overlaps_mean"][k], body["final_layer_overlaps_std"][k]),
             pm(se["layer_overlaps"][k], se["overlap_ci95"][k])]
            for k, name in enumerate(body["index_names"])]
    return [_table(f"GAMP vs SE: {_model(body)}, D={body['dimension']}, alpha={num(body['alpha'])}, "
                   f"{body['seeds']} seeds", ["index", "GAMP overlap (mean ± std)", "SE overlap"],
                   rows, f"prediction error {error}")]


def sweep(body: dict) -> list[Table]:
    result = body["result"]
    rows = []
    for p in result["points"]:
        r = p.get("result") or {}
        if p["kind"] == "thresholds" and r:
            what = ", ".join(f"{e.get('layer') or num(e.get('direction'))}: {num(e['alpha'])}"
                             for e in r["thresholds"])
        elif r:
            what = "overlaps " + num(r["uninformed"]["layer_overlaps"])
        else:
            what = (p.get("error") or {}).get("detail", "")
        rows.append([p["index"], p["kind"], p["value"], p["alpha"], p["status"], what])
    return [_table(f"sweep {body['id']}: {body['status']} ({body['progress']['done']}/"
                   f"{body['progress']['total']})",
                   ["point", "kind", result.get("parameter") or "value", "alpha", "status",
                    "thresholds (layer: alpha) / overlaps"], rows)]


def fields(body: dict) -> list[Table]:
    return [_table("", ["field", "value"],
                   [[k, v if not isinstance(v, (dict, list)) or len(str(v)) < 100 else "..."]
                    for k, v in body.items()])]


def checks(body: dict) -> list[Table]:
    cs = body.get("checks") or []
    if not cs:
        return []
    return [_table("self-checks", ["check", "passed", "detail"],
                   [[c["name"], c["passed"], c["detail"]] for c in cs])]


LAYOUTS = {"thresholds": thresholds, "state_evolution": state_evolution, "sample_size": sample_size,
           "amp_simulation": amp_simulation, "sweep": sweep}


def show_table(verb: str, body: dict, console: Console | None = None) -> None:
    console = console or Console(soft_wrap=False)
    layout = LAYOUTS.get(verb, fields)
    if "status" in body and "progress" in body and verb != "sweep":  # a job record (--no-wait)
        layout = fields
    for t in layout(body) + checks(body):
        console.print(t)
