"""Formula links through the REST API: problems naming the field, token and column; the
canonical formula as the cache key; the catalogue's grammar."""
from __future__ import annotations

import math

import pytest

from service_support import app_client, pool  # noqa: F401

pytestmark = pytest.mark.timeout(600)


def _model(formula, **extra):
    return {"family": "multi_index", "link": {"formula": formula}, **extra}


@pytest.mark.parametrize("model, field, value, allowed", [
    (_model("sign(z1) + x"), "model.link.formula", "x (column 12)", "variable z1 .. z4"),
    (_model("z1.__class__"), "model.link.formula", "z1.__class__ (column 1)", "expression of"),
    (_model("z1 / z2"), "model.link.formula", "/ z2 (column 6)", "cannot be 0"),
    (_model("z1 * z5"), "model.link.formula", "z5 (column 6)", "at most 4 variables"),
    (_model("z1 + " * 60), "model.link.formula", None, "at most 200 characters"),
    (_model("abs(" * 13 + "z1" + ")" * 13), "model.link.formula", None, "nested at most 12"),
    (_model("z1*z2"), "model.link.formula", "z1*z2", "noise level"),
    (_model("z1*z2"), "model.link.formula", "z1*z2", "cannot be inverted: a formula in 2 variables"),
    (_model("relu(z1)"), "model.link.formula", "relu(z1)", "cannot be inverted: it is flat"),
    (_model("min(z1, 0)"), "model.link.formula", "min(z1, 0.0)", "noise level > 0 (model.noise)"),
    (_model("z1 + sign(z1)"), "model.link.formula", None, "cannot be inverted: it jumps at z1 = 0"),
    (_model("exp(exp(z1**2))", noise=0.1), "model.link.formula", None, "finite for every z"),
    (_model("sign(z1)", indices=3.5), "model.indices", None, "from its largest variable to 4"),
])
def test_formula_problems(app_client, model, field, value, allowed):
    r = app_client.post("/v1/thresholds", json={"model": model, "precision": "fast"})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["field"] == field, p
    assert allowed in (p.get("allowed") or p["detail"]), p
    if value is not None:
        assert value in p["detail"], p


def test_formula_link_object_rejects_other_keys(app_client):
    r = app_client.post("/v1/thresholds", json={"model": {"family": "multi_index",
                                                      "link": {"formula": "sign(z1)", "f": 1}}})
    assert r.status_code == 422 and r.json()["field"].startswith("model.link")


def test_formula_thresholds_share_the_canonical_cache_entry(app_client):
    first = app_client.post("/v1/thresholds", json={"model": _model("sign(z2*z1)"), "precision": "fast"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["model"]["link"] == {"formula": "sign(z1*z2)"}
    assert len(body["thresholds"]) == 2  # (1, 1) and (1, -1): a degenerate top eigenspace
    for t in body["thresholds"]:
        assert abs(t["alpha"] - math.pi ** 2 / 4) <= t["ci95"] + 1e-3
    again = app_client.post("/v1/thresholds", json={"model": _model("sign( z1 * z2 )"), "precision": "fast"})
    assert again.status_code == 200 and again.json()["cache"] == "hit"


def test_catalogue_lists_the_grammar(app_client):
    cat = app_client.get("/v1/models").json()["families"]["multi_index"]["formula_links"]
    assert "where(c, a, b)" in cat["grammar"] and "sign(z1*z2) + 0.5*tanh(z3)" in cat["examples"]


def test_amp_simulation_of_a_formula_link(app_client):
    from service_support import wait_job
    body = {"model": _model("sign(z1)"), "dimension": 200, "alpha": 1.0, "seeds": 2, "iterations": 15}
    r = app_client.post("/v1/amp-simulations", json=body)
    assert r.status_code == 202, r.text
    job = wait_job(app_client, r.headers["location"], timeout=300)
    assert job["status"] == "done", job
    res = job["result"]
    se = res["state_evolution"]["layer_overlaps"][0]
    assert abs(res["final_layer_overlaps_mean"][0] - se) < 0.1  # finite size at D = 200


def test_noiseless_formula_that_can_be_inverted(app_client):
    """y = z1**3 noiseless: y reveals z, so the first threshold is trivial (alpha = 0, E[z | y] =
    z), and perfect recovery is at alpha = 1 both ways (noiseless linear regression)."""
    r = app_client.post("/v1/thresholds", json={"model": _model("z1**3"), "precision": "fast"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["link"] == {"formula": "z1**3"} and body["model"]["noise"] == 0.0
    (t,) = body["thresholds"]
    assert t["kind"] == "trivial" and t["alpha"] == 0.0
    for tr in body["transitions"]:
        assert abs(tr["alpha"] - 1.0) <= tr["ci95"] + 1e-9, tr


def test_cost_of_a_noiseless_continuous_formula():
    """Its root search per sample costs about 8x the named link's closed form (service/cost.py);
    a finite-valued formula costs what its named link does."""
    from service import cost
    params = {"precision": "standard", "seed": 0}
    base = {"family": "multi_index", "indices": 1, "noise": 0.0}
    square = cost.estimate("thresholds", {**base, "link": "square"}, params)
    assert cost.estimate("thresholds", {**base, "link": {"formula": "z1**2"}}, params) == 8.0 * square
    assert cost.estimate("thresholds", {**base, "link": {"formula": "sign(z1)"}}, params) == square
    noisy = cost.estimate("thresholds", {**base, "noise": 0.1, "link": "square"}, params)
    assert cost.estimate("thresholds", {**base, "noise": 0.1, "link": {"formula": "z1**2"}}, params) == noisy
