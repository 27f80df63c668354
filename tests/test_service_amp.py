"""POST /v1/amp-simulations (issue 4): always a job; GAMP trajectories next to the SE prediction."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service_support import pool, settings, wait_job  # noqa: F401

pytestmark = pytest.mark.timeout(120)

PHASE = {"family": "multi_index", "link": "square"}
SMALL = {"model": PHASE, "dimension": 200, "alpha": 2.0, "seeds": 2, "iterations": 20}


@pytest.fixture(scope="module")
def client(pool, tmp_path_factory):  # noqa: F811
    app = create_app(settings(tmp_path_factory.mktemp("cache")), pool=pool)
    with TestClient(app) as c:
        yield c


def _run(client, body):
    r = client.post("/v1/amp-simulations", json=body)
    assert r.status_code == 202, r.text
    loc = r.headers["location"]
    assert loc == r.json()["location"] and loc.startswith("/v1/jobs/")
    job = wait_job(client, loc, timeout=100)
    assert job["status"] == "done", job
    return job


def test_phase_retrieval_job_trajectories_and_se(client):
    job = _run(client, SMALL)
    assert job["kind"] == "amp_simulation"
    assert job["progress"]["done"] == job["progress"]["total"] == 2 * 20 + 1
    res = job["result"]
    assert res["dimension"] == 200 and res["alpha"] == 2.0 and res["damping"] == 0.0
    assert res["samples"] == 400
    P = len(res["index_names"])
    assert P == 1
    assert [run["seed"] for run in res["runs"]] == [0, 1]
    for run in res["runs"]:
        assert len(run["layer_overlaps"]) == 21 and all(len(row) == P for row in run["layer_overlaps"])
        assert 1 <= run["iterations"] <= 20
    for key in ("layer_overlaps_mean", "layer_overlaps_std", "layer_overlaps_min", "layer_overlaps_max"):
        assert len(res[key]) == 21 and all(len(row) == P for row in res[key]), key
    assert len(res["first_learned"]) == 2 and len(res["final_layer_overlaps_mean"]) == P
    assert res["final_layer_overlaps_mean"][0] > 0.5
    assert res["layer_overlaps_mean"][-1] == res["final_layer_overlaps_mean"]
    se = res["state_evolution"]
    assert se["start"] == "uninformed" and se["alpha"] == 2.0
    assert len(se["layer_overlaps"]) == P and len(se["overlap_ci95"]) == P
    assert se["layer_overlaps"][0] > 0.9  # alpha = 2 > 1: perfect recovery
    assert res["solver"]["version"].startswith("amp-")


def test_cached_answer_is_still_a_job(client):
    job = _run(client, SMALL)  # the same question: from the cache, but still 202 and a job
    assert job["result"]["final_layer_overlaps_mean"][0] > 0.5


@pytest.mark.parametrize("change, field", [({"dimension": 10}, "dimension"), ({"seeds": 11}, "seeds"),
                                           ({"alpha": 0}, "alpha"), ({"damping": 0.95}, "damping"),
                                           ({"iterations": 201}, "iterations")])
def test_validation_errors_are_problems(client, change, field):
    r = client.post("/v1/amp-simulations", json={**SMALL, **change})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["field"] == field
    assert body["allowed"] and body["errors"][0]["field"] == field


def test_memory_limit_names_dimension(client):
    r = client.post("/v1/amp-simulations", json={**SMALL, "dimension": 5000, "alpha": 10.0})
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == "dimension"
