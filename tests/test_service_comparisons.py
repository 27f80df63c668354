"""POST /v1/comparisons: validation, a real comparison on the square link (cheap: a fraction of a
second per state-evolution point at fast; weak recovery at alpha = 1/2) checked against the solvers run directly, the
shared cache (a second comparison with overlapping alphas computes only its new points, and
/v1/state-evolution answers the user's alpha from the comparison's entry), the job path and
the plots."""
from __future__ import annotations

import asyncio
import io
import math
import time
import xml.etree.ElementTree as ET

import pytest

import solvers
from service.main import create_app
from service_support import pool, run_app, settings  # noqa: F401
from solvers.comparison import theory_alphas
from solvers.limits import MAX_COMPARISON_POINTS
from solvers.sample_size import sample_size

SQUARE = {"family": "multi_index", "link": "square"}
D = 1000

pytestmark = pytest.mark.timeout(600)


SEED = 77  # fixed: the half-width assertion is then deterministic (each test has its own cold cache)


def body(samples, errors, seed, **kw):
    return {"model": SQUARE, "dimension": D, "precision": "fast", "seed": seed,
            "points": [{"samples": n, "test_error": e} for n, e in zip(samples, errors)], **kw}


def test_validation_names_the_field(tmp_path, pool):  # noqa: F811
    app = create_app(settings(tmp_path), pool=pool)
    good = {"samples": 500, "test_error": 0.5}
    cases = {
        "points[1].samples": [good, {"samples": 0, "test_error": 0.5}],
        "points[0].test_error": [{"samples": 500, "test_error": -0.1}],
        "points[2].test_error": [good, good, {"samples": 500, "test_error": 1001.0}],
        "points": [good] * (MAX_COMPARISON_POINTS + 1),
    }

    async def scenario(c):
        out = {f: await c.post("/v1/comparisons", json={"model": SQUARE, "dimension": D, "points": pts})
               for f, pts in cases.items()}
        out["points[0].samples "] = await c.post("/v1/comparisons", json={  # alpha above 1000
            "model": SQUARE, "dimension": 10, "points": [{"samples": 20000, "test_error": 0.5}]})
        out["metric"] = await c.post("/v1/comparisons", json={"model": SQUARE, "dimension": D,
                                                              "points": [good], "metric": "accuracy"})
        out["model.link"] = await c.post("/v1/comparisons", json={
            "model": {"family": "multi_index", "link": "nope"}, "dimension": D, "points": [good]})
        out["points[0].error_bar"] = await c.post("/v1/comparisons", json={
            "model": SQUARE, "dimension": D, "points": [{**good, "error_bar": -1.0}]})
        return out

    for field, r in run_app(app, scenario).items():
        assert r.status_code == 422, (field, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        p = r.json()
        assert p["field"] == field.strip(), (field, p)
        assert p["allowed"], p


def test_comparison_against_the_solvers_shared_cache_and_plots(tmp_path, pool):  # noqa: F811
    app = create_app(settings(tmp_path), pool=pool)
    seed = SEED
    first_n, first_e = [300, 600, 1600], [3.5, 2.7, 2.2]
    second_n, second_e = [1600, 3200], [2.2, 0.5]

    async def scenario(c):
        r1 = await c.post("/v1/comparisons", json=body(first_n, first_e, seed))

        png = await c.get(r1.json()["plot"]["png"])
        svg = await c.get(r1.json()["plot"]["svg"])
        job = await c.get(f"/v1/jobs/{r1.json()['id']}")
        t0 = time.perf_counter()
        r2 = await c.post("/v1/comparisons", json=body(second_n, second_e, seed))
        second_s = time.perf_counter() - t0
        se = await c.post("/v1/state-evolution", json={"model": SQUARE, "alphas": [1.6], "precision": "fast",
                                                       "seed": seed})
        r3 = await c.post("/v1/comparisons", json=body(first_n, first_e, seed),
                          headers={"Prefer": "respond-async"})
        loc = r3.headers.get("location")
        for _ in range(600):
            j3 = (await c.get(loc)).json()
            if j3["status"] == "done":
                break
            await asyncio.sleep(0.1)
        return r1, png, svg, job, r2, second_s, se, r3, j3

    r1, png, svg, job, r2, second_s, se, r3, j3 = run_app(app, scenario)
    assert r1.status_code == 200, r1.text
    out = r1.json()
    alphas1 = theory_alphas([n / D for n in first_n])
    assert out["theory"]["alphas"] == alphas1
    assert out["theory_points"] == {"total": len(alphas1) + 1, "from_cache": 0}

    # every error is the solvers' own state-evolution error at that alpha (bit for bit)
    spec = solvers.spec_from_dict(SQUARE)
    for p in out["points"]:
        sp = solvers.state_evolution(spec, [p["alpha"]], precision="fast", seed=seed).points[0]
        assert p["bayes_optimal"]["error"] == getattr(sp, sp.bayes_optimal).prediction_error_plugin
        assert p["amp"]["error"] == sp.uninformed.prediction_error_plugin
        assert p["bayes_optimal"]["ci95"] >= 0
    # the layers learned: the threshold (about 1/2) lies between alpha = 0.3 and 0.6
    th = out["thresholds"][0]
    assert th["label"] == "direction 1" and th["kind"] == "weak_recovery" and 0.45 < th["alpha"] < 0.55
    assert [p["learned_layers"] for p in out["points"]] == [[], ["direction 1"], ["direction 1"]]
    # the samples the optimum needs: the grid's bracket holds the bisection's crossing
    # (solvers.sample_size: its own state-evolution points, bisection in alpha)
    p = out["points"][2]  # N = 1600, error 2.2
    bo = p["bayes_optimal"]
    assert bo["reached"] == "bracketed" and bo["samples_ratio"] == pytest.approx(1600 / bo["samples_needed"])
    lo, hi = bo["alpha_needed_range"]
    assert lo < bo["alpha_needed"] <= hi
    ss = sample_size(spec, D, {"kind": "prediction_error", "max": 2.2}, precision="fast", seed=seed)
    assert lo - ss.ci95 <= ss.alpha <= hi + ss.ci95, (ss.alpha, ss.ci95, lo, hi)
    # the user's error at N = 1600 is above the optimum's there: the optimum needs fewer samples
    assert bo["error"] < 2.2 and bo["samples_needed"] < 1600 and bo["samples_ratio"] > 1
    assert p["amp"]["samples_needed"] >= bo["samples_needed"]
    # at N = 300 the user's 3.5 is above the error of alpha -> 0 (E z^4 = 3): reached at the grid's
    # first alpha already
    assert out["points"][0]["bayes_optimal"]["reached"] == "at_most"
    # the sharpest drop of 3.5, 2.7, 2.2 per log-sample: 300 -> 600, across the threshold
    s = out["summary"]
    assert (s["sharpest_drop"]["samples_from"], s["sharpest_drop"]["samples_to"]) == (300, 600)
    assert s["sharpest_drop"]["rate"] == pytest.approx(0.8 / math.log(2))
    assert s["thresholds_inside"] == ["direction 1"] and s["nearest_threshold"] == "direction 1"
    assert s["nearest_threshold_factor"] == 1.0
    # the theory's own sharpest drop on the grid: past the threshold (where the error starts falling)
    theirs = s["bayes_optimal_sharpest_drop"]
    assert theirs["samples_from"] >= 500 and theirs["error_from"] > theirs["error_to"]
    # the half-widths: the QMC average's at least (seen: about 0.3 at fast)
    assert all(0 < p["bayes_optimal"]["ci95"] < 1.0 for p in out["points"])
    assert out["points"][0]["bayes_optimal"]["error"] == pytest.approx(3.0, abs=out["points"][0]["bayes_optimal"]["ci95"])

    assert job.json()["kind"] == "comparison" and job.json()["status"] == "done"
    assert job.json()["result"]["points"] == out["points"]
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    from PIL import Image

    img = Image.open(io.BytesIO(png.content))
    assert img.format == "PNG" and img.width > 300
    assert svg.status_code == 200 and ET.fromstring(svg.content).tag == "{http://www.w3.org/2000/svg}svg"

    # the second comparison computes only the alphas the first did not have
    assert r2.status_code == 200, r2.text
    alphas2 = theory_alphas([n / D for n in second_n])
    shared = set(alphas1) & set(alphas2)
    assert len(shared) >= 8
    assert r2.json()["theory_points"] == {"total": len(alphas2) + 1, "from_cache": len(shared) + 1}
    for k in ("error", "ci95"):
        assert r2.json()["points"][0]["bayes_optimal"][k] == out["points"][2]["bayes_optimal"][k]
    # /v1/state-evolution answers the user's alpha from the comparison's cache entry
    assert se.status_code == 200 and se.json()["cache"] == "hit"
    se_pt = se.json()["points"][0]
    assert se_pt[se_pt["bayes_optimal"]]["prediction_error_plugin"] == out["points"][2]["bayes_optimal"]["error"]

    # Prefer: respond-async gives the job at once; its result is the same comparison
    assert r3.status_code == 202 and r3.headers["location"].startswith("/v1/jobs/")
    assert j3["status"] == "done" and j3["result"]["points"] == out["points"]
    assert j3["result"]["theory_points"]["from_cache"] == len(alphas1) + 1


def test_plot_before_the_theory_is_done_shows_the_points():
    """A running comparison's picture: the user's points alone, the progress in the title."""
    from service import plots

    body = {"kind": "comparison", "status": "running", "progress": {"done": 3, "total": 30, "failed": 0},
            "request": {"model": SQUARE, "dimension": D, "metric": "prediction_error",
                        "points": [{"samples": 500, "test_error": 2.9, "error_bar": 0.3},
                                   {"samples": 1000, "test_error": 1.5, "error_bar": None}]},
            "result": None}
    root = ET.fromstring(plots.render(body, "svg"))
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert "3/30" in plots.render(body, "svg").decode()
