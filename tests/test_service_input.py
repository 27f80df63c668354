"""Hostile and sloppy input: body size (413), media type (415), malformed JSON (400), strict
types (422), and the fast path never answering what the normal path would refuse."""
from __future__ import annotations

import asyncio

import orjson
import pytest
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

import service.body as body_module
from service.body import BodyLimits, JSONRoute
from service.main import create_app
from service.routemap import RouteMap
from service.schemas import AmpSimulationRequest, SampleSizeRequest, ThresholdsRequest
from service.settings import Settings
from service.sweeps import SweepRequest
from service_support import PAPER, PHASE, pool, settings  # noqa: F401

pytestmark = pytest.mark.timeout(600)

CAP = 4096  # a small cap for the app under test, so the bodies stay small


@pytest.fixture(scope="module")
def app_client(pool, tmp_path_factory):  # noqa: F811
    app = create_app(settings(tmp_path_factory.mktemp("cache"), max_body_bytes=CAP), pool=pool)
    with TestClient(app) as c:
        yield app, c


@pytest.fixture(scope="module")
def client(app_client):
    return app_client[1]


def assert_problem(r, status, field=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    p = r.json()
    assert p["status"] == status and p["title"] and p["detail"] and p["type"].startswith("/problems/")
    if field is not None:
        assert p["field"] == field, p
    return p


# ------------------------------------------------------------------ 413: the body's size

def test_body_cap_setting(monkeypatch):
    assert Settings(_env_file=None).max_body_bytes == 1_048_576
    monkeypatch.setenv("STAIRCASE_MAX_BODY_BYTES", "2048")
    assert Settings(_env_file=None).max_body_bytes == 2048


def test_default_cap_refuses_a_body_over_one_mebibyte(pool, tmp_path):  # noqa: F811
    """The default app: 1 MiB + 1 byte is 413 (whatever the route), 1 MiB is read."""
    app = create_app(settings(tmp_path), pool=pool)
    with TestClient(app) as c:
        big = b" " * (1_048_576 + 1)
        for path in ("/v1/thresholds", "/v1/sweeps", "/healthz"):
            r = c.post(path, content=big, headers={"content-type": "application/json"})
            p = assert_problem(r, 413, "body")
            assert "1048576" in p["allowed"]
        r = c.post("/v1/thresholds", content=b'{"model": {"family": "x"}}' + b" " * (1_048_576 - 26),
                   headers={"content-type": "application/json"})
        assert r.status_code == 422, r.text


def test_over_the_cap_by_content_length_or_by_counting(client):
    body = orjson.dumps({"model": PHASE, "precision": "fast", "pad": "x" * CAP})
    r = client.post("/v1/thresholds", content=body, headers={"content-type": "application/json"})
    assert_problem(r, 413, "body")
    assert r.headers["connection"] == "close"
    # no Content-Length (chunked): the bytes are counted
    r = client.post("/v1/thresholds", content=iter([body[:1000], body[1000:]]),
                    headers={"content-type": "application/json"})
    assert "content-length" not in r.request.headers
    assert_problem(r, 413, "body")
    # under the cap: the body reaches validation
    r = client.post("/v1/thresholds", content=orjson.dumps({"model": PHASE, "colour": "x" * 100}),
                    headers={"content-type": "application/json"})
    assert_problem(r, 422, "colour")


def test_streamed_body_is_cut_off_at_the_cap():
    """A body without Content-Length that never ends: read up to the cap, then 413; the app
    behind never runs, and no more than cap + one chunk was ever received.  With a
    Content-Length over the cap, nothing is received at all."""
    chunk = b"x" * 1000
    received = []
    sent = []

    async def receive():
        received.append(len(chunk))
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    async def app(scope, receive, send):  # pragma: no cover - must not run
        raise AssertionError("the app read an over-long body")

    class Owner:  # what BodyLimits reads of the FastAPI app
        class state:
            route_map = RouteMap([])

    scope = {"type": "http", "method": "POST", "path": "/v1/thresholds", "headers": [
        (b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimits(app, Owner, max_bytes=CAP)(scope, receive, send))
    assert sum(received) == (CAP // len(chunk) + 1) * len(chunk)
    assert sent[0]["status"] == 413
    assert orjson.loads(sent[1]["body"])["status"] == 413
    # a Content-Length over the cap: answered before a byte is received
    received.clear(), sent.clear()
    scope["headers"] = [(b"content-type", b"application/json"), (b"content-length", b"%d" % (CAP + 1))]
    asyncio.run(BodyLimits(app, Owner, max_bytes=CAP)(scope, receive, send))
    assert received == [] and sent[0]["status"] == 413


# ------------------------------------------------------------------ 415: the media type

@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/jsonx",
                                          "text/json"])
def test_not_json_is_415(client, content_type):
    headers = {} if content_type is None else {"content-type": content_type}
    body = orjson.dumps({"model": PHASE, "precision": "fast"})
    for path in ("/v1/thresholds", "/v1/sweeps"):
        r = client.post(path, content=body, headers=headers)
        p = assert_problem(r, 415, "Content-Type")
        assert "application/json" in p["allowed"]


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8",
                                          "application/merge-patch+json", "application/vnd.api+json"])
def test_json_media_types_are_read(client, content_type):
    r = client.post("/v1/thresholds", content=orjson.dumps({"model": {"family": "transformer"}}),
                    headers={"content-type": content_type})
    assert_problem(r, 422, "model")


def test_no_body_needs_no_content_type(client):
    """415 is about a body: a POST without one is the usual 422 (the body is required)."""
    assert client.post("/v1/thresholds").status_code == 422
    assert client.get("/healthz", headers={"content-type": "text/plain"}).status_code == 200


def test_fast_path_memo_does_not_skip_the_media_type(app_client):
    """The fast path answers a body it has seen from its memo: not when it is not JSON."""
    app, client = app_client
    body = orjson.dumps({"model": PHASE, "precision": "fast", "seed": 3})
    first = client.post("/v1/thresholds", content=body, headers={"content-type": "application/json"})
    assert first.status_code == 200, first.text
    assert app.state.memo.get("/v1/thresholds", body) is not None
    assert_problem(client.post("/v1/thresholds", content=body, headers={"content-type": "text/plain"}), 415)
    assert_problem(client.post("/v1/thresholds", content=body), 415)
    again = client.post("/v1/thresholds", content=body, headers={"content-type": "application/json"})
    assert again.status_code == 200 and again.json()["cache"] == "hit"


# ------------------------------------------------------------------ parsing off the event loop

def test_large_bodies_are_parsed_in_a_thread(pool, tmp_path, monkeypatch):  # noqa: F811
    """A body over THREAD_PARSE_BYTES is parsed where no event loop runs (a thread); a small
    one on the loop.  Both are parsed by the same function, so errors are the same."""
    where = []

    def parse(body):
        try:
            asyncio.get_running_loop()
            where.append(("loop", len(body)))
        except RuntimeError:
            where.append(("thread", len(body)))
        return body_module.json.loads(body)

    monkeypatch.setattr(body_module, "parse", parse)
    app = create_app(settings(tmp_path), pool=pool)
    with TestClient(app) as c:
        small = orjson.dumps({"model": PAPER, "alphas": [0.5] * 51})
        large = orjson.dumps({"model": PAPER, "alphas": [0.5] * 51, "pad": "x" * body_module.THREAD_PARSE_BYTES})
        for path in ("/v1/state-evolution", "/v1/sweeps"):
            for body, place in ((small, "loop"), (large, "thread")):
                where.clear()
                r = c.post(path, content=body, headers={"content-type": "application/json"})
                assert r.status_code == 422, r.text
                assert where == [(place, len(body))], (path, where)


def test_every_route_with_a_body_uses_the_json_route(app_client):
    app, _ = app_client
    with_body = [rc for rc in iter_route_contexts(app.routes) if getattr(rc, "body_field", None)]
    assert len(with_body) >= 5
    assert all(isinstance(rc.original_route, JSONRoute) for rc in with_body), with_body


# ------------------------------------------------------------------ 400: not JSON

@pytest.mark.parametrize("body", [
    b'{"model": {"family": "deep_attention", "layers": 2',   # truncated
    b"{not json",
    b'{"model": {"family": "multi_index"}} trailing',
    b'{"model": {"family": "multi_index",}}',
    b'{"model": "\xff\xfe"}',                                 # not UTF-8
    b"[" * 2000 + b"]" * 2000,                                # nested deeper than json.loads goes
])
def test_malformed_json_is_400(client, body):
    for path in ("/v1/thresholds", "/v1/state-evolution", "/v1/sweeps"):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
        p = assert_problem(r, 400, "body")
        assert p["type"] == "/problems/malformed-body"


def test_valid_json_of_the_wrong_shape_is_422(client):
    """Parsed, but not the object the route takes: that is a field error, not a parse error."""
    r = client.post("/v1/thresholds", content=b"[1, 2]", headers={"content-type": "application/json"})
    assert_problem(r, 422, "body")


# ------------------------------------------------------------------ 422: strict types

SE = {"model": PAPER, "alphas": [0.5], "precision": "fast"}
SAMPLE = {"model": PAPER, "dimension": 768, "precision": "fast",
          "target": {"kind": "weak_recovery", "layers": "all"}}
AMP = {"model": PHASE, "dimension": 100, "alpha": 2.0, "seeds": 1, "iterations": 5}
SWEEP = {"model": PAPER, "compute": "thresholds", "grid": {"parameter": "skip", "values": [0.5, 1]},
         "precision": "fast"}


@pytest.mark.parametrize("path, body, field", [
    ("/v1/thresholds", {"model": {**PAPER, "layers": True}}, "model.layers"),
    ("/v1/thresholds", {"model": {**PAPER, "layers": "2"}}, "model.layers"),
    ("/v1/thresholds", {"model": {**PAPER, "layers": 2.5}}, "model.layers"),
    ("/v1/thresholds", {"model": PAPER, "seed": 1.5}, "seed"),
    ("/v1/thresholds", {"model": {**PAPER, "tokens": False}}, "model.tokens"),
    ("/v1/thresholds", {"model": {**PAPER, "skip": True}}, "model.skip"),
    ("/v1/thresholds", {"model": {**PAPER, "beta": [1.0, "1"]}}, "model.beta"),
    ("/v1/thresholds", {"model": {**PAPER, "noise": "0"}}, "model.noise"),
    ("/v1/thresholds", {"model": {**PHASE, "indices": True}}, "model.indices"),
    ("/v1/thresholds", {"model": PAPER, "dimension": "768"}, "dimension"),
    ("/v1/thresholds", {"model": PAPER, "seed": True}, "seed"),
    ("/v1/thresholds", {"model": PAPER, "se_bracket": 1}, "se_bracket"),
    ("/v1/state-evolution", {**SE, "alphas": [True]}, "alphas[0]"),
    ("/v1/state-evolution", {**SE, "alphas": [0.5, "1.0"]}, "alphas[1]"),
    ("/v1/sample-size", {**SAMPLE, "dimension": True}, "dimension"),
    ("/v1/sample-size", {**SAMPLE, "target": {"kind": "weak_recovery", "layers": True}}, "target.layers"),
    ("/v1/sample-size", {**SAMPLE, "target": {"kind": "prediction_error", "max": "0.1"}}, "target.max"),
    ("/v1/amp-simulations", {**AMP, "alpha": True}, "alpha"),
    ("/v1/amp-simulations", {**AMP, "seeds": "1"}, "seeds"),
    ("/v1/amp-simulations", {**AMP, "damping": False}, "damping"),
    ("/v1/sweeps", {**SWEEP, "grid": {"parameter": "skip", "values": [0.5, True]}}, "grid.values[1]"),
    ("/v1/sweeps", {**SWEEP, "seed": "0"}, "seed"),
])
def test_booleans_and_strings_are_not_numbers(client, path, body, field):
    r = client.post(path, json=body)
    p = assert_problem(r, 422, field)
    assert all(e["field"] == field or e["field"].startswith(field + "[") for e in p["errors"]), p


def test_json_integers_fill_float_fields():
    """Strict floats still take integers: "skip": 1, "alpha": 2, "max": 1, sweep values 1."""
    t = ThresholdsRequest.model_validate({"model": {**PAPER, "skip": 1, "beta": [1, 2], "noise": 0}})
    assert t.model.skip == 1.0 and t.model.beta == [1.0, 2.0] and isinstance(t.model.noise, float)
    assert AmpSimulationRequest.model_validate({**AMP, "alpha": 2, "damping": 0}).alpha == 2.0
    target = {"kind": "prediction_error", "max": 1}
    assert SampleSizeRequest.model_validate({**SAMPLE, "target": target}).target.max == 1.0
    assert SweepRequest.model_validate({**SWEEP, "grid": {"parameter": "skip", "values": [1, 2]}}).grid.values == [1.0, 2.0]


def test_json_numbers_without_a_fraction_fill_integer_fields():
    """JSON Schema's integer (so the OpenAPI document's) is a number with no fraction: 2.0 is 2
    (schemathesis's positive_data_acceptance sends such bodies); 2.5, true and "2" are refused
    (above).  The canonical question, hence the cache key, is the same as for 2."""
    t = ThresholdsRequest.model_validate({"model": {**PAPER, "layers": 2.0, "tokens": 2.0},
                                          "seed": 3.0, "dimension": 768.0})
    assert (t.model.layers, t.model.tokens, t.seed, t.dimension) == (2, 2, 3, 768)
    assert type(t.model.layers) is int and type(t.seed) is int and type(t.dimension) is int
    assert t.model_dump() == ThresholdsRequest.model_validate(
        {"model": {**PAPER, "layers": 2, "tokens": 2}, "seed": 3, "dimension": 768}).model_dump()
    a = AmpSimulationRequest.model_validate({**AMP, "dimension": 100.0, "seeds": 1.0, "iterations": 5.0})
    assert (a.dimension, a.seeds, a.iterations) == (100, 1, 5)
    target = {"kind": "weak_recovery", "layers": 2.0}
    assert SampleSizeRequest.model_validate({**SAMPLE, "target": target}).target.layers == 2
    assert SweepRequest.model_validate({**SWEEP, "seed": 7.0}).seed == 7


def test_the_fast_path_cannot_answer_a_body_the_schemas_refuse(app_client):
    """The memo maps body bytes to questions only after they validated: a refused body is
    refused every time, even next to its valid twin ("noise": 0 is a valid int-for-float)."""
    app, client = app_client
    valid = orjson.dumps({"model": {**PHASE, "noise": 0}, "precision": "fast", "seed": 5})
    assert client.post("/v1/thresholds", content=valid, headers={"content-type": "application/json"}).status_code == 200
    assert client.post("/v1/thresholds", content=valid, headers={"content-type": "application/json"}).json()["cache"] == "hit"
    for bad in ({"model": {**PHASE, "noise": False}, "precision": "fast", "seed": 5},
                {"model": {**PHASE, "noise": 0}, "precision": "fast", "seed": True}):
        raw = orjson.dumps(bad)
        for _ in range(2):
            r = client.post("/v1/thresholds", content=raw, headers={"content-type": "application/json"})
            assert r.status_code == 422, r.text
        assert app.state.memo.get("/v1/thresholds", raw) is None



def test_a_validation_problem_stays_small(client):
    """A body failing in many places gets the first 20 errors, and long values are echoed
    cut to 200 characters (a 1.5 MB body of unknown keys was answered with 11.7 MB)."""
    body = orjson.dumps({"model": PHASE, "alphas": [0.5] * 300, **{f"x{i}": 1 for i in range(100)}})
    r = client.post("/v1/state-evolution", content=body, headers={"content-type": "application/json"})
    p = assert_problem(r, 422, "alphas")
    assert len(p["errors"]) == 20
    value = p["errors"][0]["value"]
    assert isinstance(value, str) and value.startswith("[0.5,0.5") and value.endswith("...")
    assert len(value) == 203
    assert len(r.content) < 5000


# ------------------------------------------------------------------ known layers (issue 13)

@pytest.mark.parametrize("model, field, allowed", [
    ({**PAPER, "known_layers": [3]}, "model.known_layers[0]", "[1, 2]"),
    ({**PAPER, "known_layers": [0]}, "model.known_layers[0]", None),
    ({**PAPER, "known_layers": [1, 2]}, "model.known_layers", "not all 2"),
    ({**PAPER, "known_layers": [True]}, "model.known_layers[0]", None),
    ({**PAPER, "known_layers": [1, 1, 1, 1]}, "model.known_layers", None),
    ({**PHASE, "known_layers": [1]}, "model.known_layers", "not all 1"),
    ({**PAPER, "noise": 0.1, "known_layers": [2]}, "model.known_layers", "last"),
])
def test_bad_known_layers_are_422_naming_the_field(client, model, field, allowed):
    p = assert_problem(client.post("/v1/thresholds", json={"model": model, "precision": "fast"}), 422, field)
    if allowed is not None:
        assert allowed in p["allowed"], p


def test_known_layer_thresholds_through_the_api(client):
    r = client.post("/v1/thresholds", json={"model": {**PAPER, "known_layers": [1]}, "precision": "fast"})
    assert r.status_code in (200, 202), r.text
    if r.status_code == 202:
        r = client.get(r.headers["location"] + "?wait=60")
    body = r.json()
    body = body.get("result", body)
    assert body["model"]["known_layers"] == [1]
    (t,) = body["thresholds"]
    assert t["layer"] == 2 and abs(t["alpha"] - 1 / 6) <= t["ci95"]
