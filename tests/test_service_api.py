"""The REST API in-process (TestClient) on the embedded disk cache, with the real solvers."""
from __future__ import annotations

import asyncio
import math
import re
import subprocess
import sys
import time

import pytest
from fastapi.testclient import TestClient

import solvers
from service import plots
from service.cache import ResultCache, cache_key
from service.main import create_app
from service_support import (PAPER, PHASE, ROOT, computations, counter, pool, settings,  # noqa: F401
                             run_app, wait_job)

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def app_client(pool, tmp_path_factory):  # noqa: F811
    app = create_app(settings(tmp_path_factory.mktemp("cache")), pool=pool)
    with TestClient(app) as c:
        yield app, c


@pytest.fixture(scope="module")
def client(app_client):
    return app_client[1]


def test_healthz_readyz(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready"
    assert body["cache"]["backend"] == "disk"
    assert body["solvers"]["ready"] is True


def test_models_catalogue(client):
    r = client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    fam = body["families"]
    assert fam["deep_attention"]["parameters"]["layers"]["max"] == 4
    assert "square" in fam["multi_index"]["links"]
    assert set(body["precisions"]) == {"fast", "standard", "precise"}


ONE_LAYER = {"family": "deep_attention", "layers": 1, "tokens": 2, "skip": 1.0, "beta": 1.0}


def test_thresholds_miss_then_hit(client):
    """A one-layer attention model (computes in a fraction of a second)."""
    _miss_then_hit(client, ONE_LAYER, layers=[1])


@pytest.mark.slow
def test_paper_model_thresholds_miss_then_hit(client):
    """The paper's model, L = 2, M = 2, c = 1: about a minute of numerics on a quiet core."""
    _miss_then_hit(client, PAPER, layers=[1, 2])


def _miss_then_hit(client, model, layers):
    req = {"model": model, "precision": "fast", "dimension": 768}
    before = computations(client)
    r = client.post("/v1/thresholds", json=req)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["cache"] == "miss"
    ths = body["thresholds"]
    assert sorted(t["layer"] for t in ths) == layers
    alphas = [t["alpha"] for t in ths]
    assert alphas == sorted(alphas)
    for t in ths:
        assert t["kind"] in ("trivial", "linear_stability", "staircase")
        assert t["ci95"] >= 0
        assert t["samples_needed"] == math.ceil(t["alpha"] * 768 - 1e-9)
    assert body["solver"]["version"] and body["solver"]["seconds"] >= 0
    again = client.post("/v1/thresholds", json=req)
    assert again.status_code == 200
    assert again.json()["cache"] == "hit"
    assert again.json()["thresholds"] == ths
    assert again.headers["server-timing"].startswith("app;dur=")
    assert computations(client) == before + 1
    # a different dimension is the same fixed point: still a hit
    other = client.post("/v1/thresholds", json={**req, "dimension": 1000}).json()
    assert other["cache"] == "hit"
    assert [t["samples_needed"] for t in other["thresholds"]] == [
        math.ceil(t["alpha"] * 1000 - 1e-9) for t in ths]


def test_corrupt_entry_is_ignored_and_recomputed(app_client):
    app, client = app_client
    req = {"model": PHASE, "precision": "fast"}
    first = client.post("/v1/thresholds", json=req).json()
    services = app.state.services
    spec = first["model"]
    key = cache_key("thresholds", spec, solvers.__version__, precision="fast", seed=0)
    memory = services.engine.cache.memory  # this process's own copy, cleared: as on a replica
    services.store.cache.set(key, b"\x00garbage{not json")
    memory.clear()
    before = computations(client)
    r = client.post("/v1/thresholds", json=req).json()
    assert r["cache"] == "miss"
    assert computations(client) == before + 1
    assert r["thresholds"] == first["thresholds"]
    # a well-formed entry stored under another key (foreign) is ignored too
    services.store.cache.set(key, ResultCache.encode("fp:thresholds:other", {"thresholds": []}))
    memory.clear()
    assert client.post("/v1/thresholds", json=req).json()["cache"] == "miss"
    assert client.post("/v1/thresholds", json=req).json()["cache"] == "hit"
    # with its own verified copy, the process answers from it and repairs the store
    services.store.cache.set(key, b"\x00garbage{not json")
    r = client.post("/v1/thresholds", json=req).json()
    assert r["cache"] == "hit" and r["thresholds"] == first["thresholds"]
    assert ResultCache.decode(key, services.store.cache.get(key)) is not None


def test_phase_retrieval_threshold_is_one_half(client):
    body = client.post("/v1/thresholds", json={"model": PHASE, "precision": "fast"}).json()
    (t,) = body["thresholds"]
    assert t["direction"] == [1.0] and t.get("layer") is None  # multi-index models name directions
    assert abs(t["alpha"] - 0.5) <= max(3 * t["ci95"], 0.02)
    assert [c["name"] for c in body["checks"]] == ["staircase order", "precision target"]
    assert all(c["passed"] and c["detail"] for c in body["checks"])


def test_se_bracket_check_on_request(client):
    """se_bracket adds the SE bracket check (its own cache entry: the plain answer stays)."""
    body = client.post("/v1/thresholds", json={"model": PHASE, "precision": "fast", "se_bracket": True}).json()
    bracket = [c for c in body["checks"] if c["name"] == "SE bracket"]
    assert bracket and bracket[0]["passed"], body["checks"]
    assert body["cache"] == "miss"


def test_async_job_202_location_and_result(client):
    req = {"model": PHASE, "precision": "fast", "seed": 7}
    r = client.post("/v1/thresholds", json=req, headers={"Prefer": "respond-async"})
    assert r.status_code == 202, r.text
    loc = r.headers["location"]
    assert loc == r.json()["location"] and loc.startswith("/v1/jobs/")
    job = wait_job(client, loc)
    assert job["status"] == "done", job
    assert job["kind"] == "thresholds"
    assert job["progress"]["done"] == job["progress"]["total"] >= 1
    assert job["result"]["thresholds"]
    sync = client.post("/v1/thresholds", json=req).json()
    assert sync["cache"] == "hit"
    assert sync["thresholds"] == job["result"]["thresholds"]


def test_cancel_job(client):
    req = {"model": PHASE, "precision": "fast", "seed": 11}
    r = client.post("/v1/thresholds", json=req, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    loc = r.headers["location"]
    d = client.delete(loc)
    assert d.status_code == 200
    assert d.json()["status"] in ("cancelled", "done")
    assert client.get(loc).json()["status"] in ("cancelled", "done")


def test_cancel_running_job_frees_the_pool(client):
    """The paper model takes about a minute: cancelling it mid-run stops its process (the
    solvers report progress only per layer), and the pool keeps serving."""
    import time

    req = {"model": PAPER, "precision": "fast", "seed": 13}
    r = client.post("/v1/thresholds", json=req, headers={"Prefer": "respond-async"})
    assert r.status_code == 202
    loc = r.headers["location"]
    for _ in range(600):
        if client.get(loc).json()["status"] == "running":
            break
        time.sleep(0.1)
    before = computations(client, outcome="cancelled")
    assert client.delete(loc).json()["status"] == "cancelled"
    job = wait_job_stopped(client, before)
    assert job == before + 1
    assert client.get(loc).json()["status"] == "cancelled"
    after = client.post("/v1/thresholds", json={"model": PHASE, "precision": "fast", "seed": 21})
    assert after.status_code == 200 and after.json()["cache"] == "miss"


def wait_job_stopped(client, before, timeout=60):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = computations(client, outcome="cancelled")
        if n > before:
            return n
        time.sleep(0.1)
    return computations(client, outcome="cancelled")


def test_unknown_job_404_and_bad_id_422(client):
    r = client.get("/v1/jobs/" + "0" * 32)
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert client.delete("/v1/jobs/" + "0" * 32).status_code == 404
    r = client.get("/v1/jobs/not-a-job")
    assert r.status_code == 422 and r.json()["field"] == "job_id"


@pytest.mark.parametrize("body, field, allowed", [
    ({"model": {**PAPER, "layers": 7}}, "model.layers", "[1, 4]"),
    ({"model": {**PAPER, "tokens": 9}}, "model.tokens", "[2, 4]"),
    ({"model": {**PAPER, "beta": 0}}, "model.beta", "(0, 100]"),
    ({"model": {**PAPER, "noise": -1}}, "model.noise", "[0, 100]"),
    ({"model": {**PAPER, "skip": [1.0, 2.0, 3.0]}}, "model.skip", "one per layer"),
    ({"model": {"family": "multi_index", "link": "cube"}}, "model.link", "square"),
    ({"model": {"family": "multi_index", "link": "product", "indices": 1}}, "model.indices", "2"),
    ({"model": {"family": "transformer"}}, "model", "deep_attention"),
    ({"model": PAPER, "precision": "exact"}, "precision", "fast"),
    ({"model": PAPER, "dimension": 2_000_000_000}, "dimension", "1000000000"),
    ({"model": PAPER, "dimension": 0}, "dimension", "[1, "),
    ({"model": PAPER, "colour": "red"}, "colour", "no such field"),
    ({}, "model", "family"),
])
def test_validation_errors_are_problems(client, body, field, allowed):
    r = client.post("/v1/thresholds", json=body)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["status"] == 422 and p["title"] and p["detail"]
    assert p["field"] == field, p
    assert allowed in p["allowed"], p


def test_state_evolution_limits_and_malformed_json(client):
    r = client.post("/v1/state-evolution", json={"model": PAPER, "alphas": [0.5] * 51})
    assert r.status_code == 422 and r.json()["field"] == "alphas" and "50" in r.json()["allowed"]
    r = client.post("/v1/state-evolution", json={"model": PAPER, "alphas": []})
    assert r.status_code == 422 and r.json()["field"] == "alphas"
    r = client.post("/v1/thresholds", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers["content-type"].startswith("application/problem+json")
    r = client.post("/v1/thresholds", content=b'{"model": {"family": "deep_attention", "skip": NaN}}',
                    headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["field"].startswith("model.skip")


def test_state_evolution_points(client):
    r = client.post("/v1/state-evolution",
                    json={"model": PHASE, "alphas": [0.3, 1.5], "precision": "fast"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [p["alpha"] for p in body["points"]] == [0.3, 1.5]
    for p in body["points"]:
        assert p["bayes_optimal"] in ("uninformed", "informed")
        for start in ("uninformed", "informed"):
            fp = p[start]
            assert fp["start"] == start
            assert len(fp["layer_overlaps"]) == 1
            assert isinstance(fp["converged"], bool) and fp["iterations"] >= 0
    assert {c["name"]: c["passed"] for c in body["checks"]} == {"converged": True, "branch order": True}
    # below alpha_c = 1/2 the uninformed start stays near zero; above it is learned
    low, high = body["points"]
    assert low["uninformed"]["layer_overlaps"][0] < high["uninformed"]["layer_overlaps"][0]


def test_sample_size_weak_recovery(client):
    ths = client.post("/v1/thresholds", json={"model": ONE_LAYER, "precision": "fast"}).json()["thresholds"]
    r = client.post("/v1/sample-size", json={"model": ONE_LAYER, "dimension": 768, "precision": "fast",
                                             "target": {"kind": "weak_recovery", "layers": "all"}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alpha"] == pytest.approx(ths[0]["alpha"]) and body["cache"] == "hit"
    assert {c["name"] for c in body["checks"]} >= {"counting bound", "precision target"}
    assert body["samples"] == max(1, math.ceil(ths[0]["alpha"] * 768 - 1e-9))


@pytest.mark.slow
def test_sample_size_weak_recovery_is_largest_threshold(client):
    ths = client.post("/v1/thresholds", json={"model": PAPER, "precision": "fast"}).json()["thresholds"]
    r = client.post("/v1/sample-size", json={"model": PAPER, "dimension": 768, "precision": "fast",
                                             "target": {"kind": "weak_recovery", "layers": "all"}})
    assert r.status_code == 200, r.text
    body = r.json()
    top = max(ths, key=lambda t: t["alpha"])
    assert body["alpha"] == pytest.approx(top["alpha"])
    assert body["samples"] == max(1, math.ceil(top["alpha"] * 768 - 1e-9))
    r = client.post("/v1/sample-size", json={"model": PAPER, "dimension": 768, "precision": "fast",
                                             "target": {"kind": "weak_recovery", "layers": 1}})
    assert r.json()["alpha"] == pytest.approx(min(t["alpha"] for t in ths))


def test_sample_size_target_errors(client):
    base = {"model": PAPER, "dimension": 768, "precision": "fast"}
    r = client.post("/v1/sample-size", json={**base, "target": {"kind": "weak_recovery", "layers": 3}})
    assert r.status_code == 422 and r.json()["field"] == "target.layers"
    assert "[1, 2]" in r.json()["allowed"]
    r = client.post("/v1/sample-size", json={**base, "target": {"kind": "prediction_error", "max": -1}})
    assert r.status_code == 422 and r.json()["field"] == "target.max"
    r = client.post("/v1/sample-size", json={**base, "target": {"kind": "accuracy"}})
    assert r.status_code == 422 and r.json()["field"].startswith("target")


def test_metrics_exposes_counters(client):
    text = client.get("/metrics").text
    for name in ("staircase_requests_total", "staircase_request_seconds", "staircase_cache_hits_total",
                 "staircase_cache_misses_total", "staircase_computations_total"):
        assert name in text


def test_api_key(pool, tmp_path):  # noqa: F811
    app = create_app(settings(tmp_path, api_key="s3cret"), pool=pool)
    with TestClient(app) as c:
        r = c.get("/v1/models")
        assert r.status_code == 401
        assert r.headers["content-type"].startswith("application/problem+json")
        assert c.get("/v1/models", headers={"X-API-Key": "wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.post("/v1/thresholds", json={"model": PAPER}).status_code == 401
        assert c.get("/healthz").status_code == 200
        assert c.get("/metrics").status_code == 200


# ------------------------------------------------------------------ 405 and the metrics' routes

@pytest.mark.parametrize("method, path, allow", [
    ("PUT", "/v1/jobs/" + "0" * 32, "DELETE, GET"),
    ("POST", "/v1/jobs/" + "0" * 32, "DELETE, GET"),
    ("GET", "/v1/thresholds", "POST"),
    ("DELETE", "/v1/sweeps", "POST"),
    ("POST", "/healthz", "GET"),
    ("POST", "/v1/jobs/" + "0" * 32 + "/plot.png", "GET"),
])
def test_405_allow_lists_every_method_of_the_path(client, method, path, allow):
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.headers["allow"] == allow


def test_metrics_label_each_route_once_by_its_v1_template(client):
    """A miss (FastAPI), a hit (the fast path) and a 413 (the body limits) of /v1/thresholds
    all count under route="/v1/thresholds"; no label without its /v1 prefix."""
    def count(text, route, status):
        return counter(text, "staircase_requests_total", method="POST", route=route, status=status)

    before = client.get("/metrics").text
    body = {"model": PHASE, "precision": "fast", "seed": 9}
    assert client.post("/v1/thresholds", json=body).json()["cache"] == "miss"
    assert client.post("/v1/thresholds", json=body).json()["cache"] == "hit"
    assert client.post("/v1/thresholds", content=b"x" * (1_048_576 + 1),
                       headers={"content-type": "application/json"}).status_code == 413
    assert client.get("/v1/jobs/not-a-job").status_code == 422
    after = client.get("/metrics").text
    assert count(after, "/v1/thresholds", "200") == count(before, "/v1/thresholds", "200") + 2
    assert count(after, "/v1/thresholds", "413") == count(before, "/v1/thresholds", "413") + 1
    assert counter(after, "staircase_requests_total", route="/v1/jobs/{job_id}", status="422") >= 1
    routes = set(re.findall(r'staircase_requests_total\{[^}]*route="([^"]*)"', after))
    assert routes <= {"/v1/thresholds", "/v1/state-evolution", "/v1/sample-size", "/v1/amp-simulations",
                      "/v1/sweeps", "/v1/models", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/plot.png",
                      "/v1/jobs/{job_id}/plot.svg", "/healthz", "/readyz", "/metrics", "unmatched"}, routes


# ------------------------------------------------------------------ matplotlib off the event loop

def test_importing_the_app_does_not_import_matplotlib():
    run = subprocess.run([sys.executable, "-c", "import sys, service.main; "
                          "sys.exit('matplotlib' in sys.modules)"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, "service.main imports matplotlib" + run.stderr


def test_startup_loads_matplotlib_in_a_thread(pool, tmp_path, monkeypatch):  # noqa: F811
    """The lifespan loads the plotting library at startup, before any plot is asked for, and
    where no event loop runs."""
    calls = []

    def load():
        try:
            asyncio.get_running_loop()
            calls.append("loop")
        except RuntimeError:
            calls.append("thread")

    monkeypatch.setattr(plots, "load", load)
    with TestClient(create_app(settings(tmp_path), pool=pool)) as c:
        assert c.get("/healthz").status_code == 200
        deadline = time.monotonic() + 30
        while not calls and time.monotonic() < deadline:
            time.sleep(0.01)
    assert calls == ["thread"]


def test_the_apps_own_pool_has_the_configured_lanes(tmp_path):
    """STAIRCASE_CHEAP_WORKERS and STAIRCASE_WORKERS size the lanes of the pool the app builds
    (the cheap lane was always one process: the setting reached only `service.worker`)."""
    async def scenario(c):
        return (await c.get("/readyz")).json()["solvers"]

    app = create_app(settings(tmp_path, workers=1, cheap_workers=2, warm_up=False))
    out = run_app(app, scenario)
    assert (out["workers"], out["cheap_workers"]) == (1, 2), out
    assert [len(app.state.services.pool.slots[lane]) for lane in ("cheap", "expensive")] == [2, 1]
