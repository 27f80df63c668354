"""The weight prior through the REST service: the model's ``prior`` field, its 422s, and the
information-theoretic vs algorithmic thresholds in POST /v1/thresholds."""
from __future__ import annotations

import math

import pytest

from service_support import app_client, pool  # noqa: F401

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("density", [0, -0.5, 1.5])
def test_a_density_outside_zero_one_is_a_problem_naming_the_field(app_client, density):
    r = app_client.post("/v1/thresholds", json={"model": {"family": "multi_index", "link": "square",
                                                      "prior": {"kind": "sparse", "density": density}}})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["field"] == "model.prior.density" and p["allowed"] == "a number in (0, 1]", p


def test_an_unknown_prior_kind_is_a_problem_naming_the_prior(app_client):
    r = app_client.post("/v1/thresholds", json={"model": {"family": "deep_attention",
                                                      "prior": {"kind": "laplace"}}})
    assert r.status_code == 422 and r.json()["field"].startswith("model.prior"), r.json()


def test_phase_retrieval_thresholds_report_both_kinds_of_perfect_recovery(app_client):
    """Gaussian phase retrieval: weak recovery 1/2; perfect recovery information-theoretically
    at 1 and algorithmically at about 1.13 (Maillard et al. 2020), a gap (coincide false)."""
    r = app_client.post("/v1/thresholds", json={"model": {"family": "multi_index", "link": "square"},
                                             "precision": "fast", "dimension": 1000})
    assert r.status_code == 200, r.text
    body = r.json()
    (weak,) = body["thresholds"]
    assert abs(weak["alpha"] - 0.5) <= weak["ci95"]
    by_kind = {t["kind"]: t for t in body["transitions"]}
    it, alg = by_kind["information_theoretic"], by_kind["algorithmic"]
    assert abs(it["alpha"] - 1.0) <= it["ci95"] and abs(alg["alpha"] - 1.13) <= max(alg["ci95"], 0.005)
    assert not it["coincide"] and it["samples_needed"] == math.ceil(it["alpha"] * 1000)
    assert "prior" not in body["model"], str(body["model"])
