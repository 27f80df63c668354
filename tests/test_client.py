"""staircase.client: Client and AsyncClient against a live uvicorn that answers every cold
question with a 202 job (followed to its answer, typed by the service's own schemas), its
errors (the server's problem+json, unreachable), and the retry rules (429 / 503 Retry-After,
job polling) on a scripted transport.

Cheap questions: the square link, weak-recovery threshold alpha_c = 1/2 in closed form."""
from __future__ import annotations

import asyncio
import math

import httpx
import pytest

from service.schemas import (AmpSimulationResponse, ComparisonResponse, JobOut, StateEvolutionResponse, ThresholdsRequest,
                             ThresholdsResponse)
from service_support import free_port, jobs_server
from staircase.client import (AsyncClient, Client, ProblemError, ServiceUnavailable, Sleep,
                              VERBS, conversation)

SQUARE = {"family": "multi_index", "link": "square"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = jobs_server(tmp_path_factory.mktemp("client-cache"))
    yield s
    s.stop()


def test_sync_client_follows_a_202(server):
    seen = []
    with Client(server.base, on_progress=seen.append) as c:
        t = c.thresholds(model=SQUARE, precision="fast", dimension=1000, seed=21)
    assert isinstance(t, ThresholdsResponse) and t.cache == "miss"
    (entry,) = t.thresholds
    assert abs(entry.alpha - 0.5) <= 2 * entry.ci95 and entry.samples_needed == math.ceil(entry.alpha * 1000)
    # it was a job: the records read while following it, the last one done
    assert seen and seen[-1]["status"] == "done" and seen[-1]["kind"] == "thresholds"
    with Client(server.base) as c:  # the same question again: the cache, answered at once (200)
        again = c.thresholds(ThresholdsRequest(model=SQUARE, precision="fast", dimension=1000, seed=21))
    assert again.cache == "hit" and again.thresholds == t.thresholds


def test_async_client_follows_a_202(server):
    seen = []

    async def main():
        async with AsyncClient(server.base, on_progress=seen.append) as c:
            return await c.state_evolution(model=SQUARE, alphas=[0.25, 1.0], precision="fast", seed=22)

    se = asyncio.run(main())
    assert isinstance(se, StateEvolutionResponse)
    below, above = se.points
    assert below.uninformed.layer_overlaps[0] < 1e-3 < 0.1 < above.uninformed.layer_overlaps[0]
    assert seen and seen[-1]["status"] == "done"


def test_no_wait_gives_the_job(server):
    with Client(server.base) as c:
        job = c.ask("thresholds", {"model": SQUARE, "precision": "fast", "seed": 23}, wait=False)
        assert job["status"] in ("queued", "running", "done")
        assert JobOut.model_validate(job).id == c.job(job["id"]).id


def test_bad_input_is_the_servers_problem(server):
    body = {"model": {"family": "deep_attention", "layers": 9}, "precision": "fast"}
    served = httpx.post(server.base + "/v1/thresholds", json=body, timeout=60)
    assert served.status_code == 422
    with Client(server.base) as c:
        with pytest.raises(ProblemError) as local:  # validated here, as the server does
            c.thresholds(body)
        assert local.value.problem == served.json()
        with pytest.raises(ProblemError) as remote:  # refused by the server's solvers
            c.thresholds(model={"family": "multi_index", "link": "product", "indices": 1})
    assert remote.value.status == 422 and remote.value.problem["field"] == "model.indices"


def test_unreachable_is_service_unavailable():
    with Client(f"http://127.0.0.1:{free_port()}") as c:
        with pytest.raises(ServiceUnavailable, match="cannot reach"):
            c.thresholds(model=SQUARE)


def _scripted(responses: list[httpx.Response], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return responses.pop(0)

    return httpx.MockTransport(handler)


JOB = {"id": "a" * 32, "kind": "thresholds", "progress": {"done": 0, "total": 2},
       "created_at": 0.0, "updated_at": 0.0, "request": {}, "error": None}


def test_retry_after_and_job_polling_are_respected():
    """429 -> wait its Retry-After, post again -> 202 -> poll (503 -> its Retry-After) -> done."""
    location = f"/v1/jobs/{'a' * 32}"
    responses = [
        httpx.Response(429, headers={"Retry-After": "7"}, json={"status": 429, "detail": "busy"}),
        httpx.Response(202, headers={"Location": location}, json={"location": location}),
        httpx.Response(200, json={**JOB, "status": "running", "result": None}),
        httpx.Response(503, headers={"Retry-After": "3"}, json={"status": 503, "detail": "store"}),
        httpx.Response(200, json={**JOB, "status": "done", "result": {"answer": 42}})]
    seen: list[httpx.Request] = []
    steps = conversation(VERBS["thresholds"], {"model": SQUARE})
    sleeps = []
    with Client("http://scripted", transport=_scripted(responses, seen)) as c:
        def record(steps):  # pass the steps on, noting the pauses instead of sleeping them
            reply = None
            while True:
                try:
                    step = steps.send(reply)
                except StopIteration as stop:
                    return stop.value
                if isinstance(step, Sleep):
                    sleeps.append(step.seconds)
                    step = Sleep(0.0)
                reply = yield step
        answer = c.run(record(steps))
    assert answer == {"answer": 42}
    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/v1/thresholds"), ("POST", "/v1/thresholds"), ("GET", location),
        ("GET", location), ("GET", location)]
    assert sleeps[0] == 7.0 and 3.0 in sleeps and all(s > 0 for s in sleeps)


def test_a_persistent_5xx_is_service_unavailable_and_the_key_is_sent():
    responses = [httpx.Response(500, json={"status": 500, "detail": "internal error"})]
    seen: list[httpx.Request] = []
    with Client("http://scripted", api_key="k3y", transport=_scripted(responses, seen)) as c:
        with pytest.raises(ServiceUnavailable, match="500"):
            c.ask("thresholds", {"model": SQUARE})
    assert seen[0].headers["X-API-Key"] == "k3y"


def test_compare(server):
    with Client(server.base) as c:
        out = c.compare(model=SQUARE, dimension=1000, precision="fast",
                        points=[{"samples": 200, "test_error": 0.9, "error_bar": 0.05},
                                {"samples": 2000, "test_error": 0.05}])
        picture = c.plot(out.id, "svg")
    assert isinstance(out, ComparisonResponse) and out.model["link"] == "square"
    assert [p.samples for p in out.points] == [200, 2000]
    assert b"<svg" in picture


def test_amp_simulation_job_equals_the_in_process_answer(server):
    """Always a job on the server; in-process the same registry entry gives the same body
    (GAMP and SE are seeded), wall times aside."""
    from staircase.local import answer

    body = {"model": SQUARE, "dimension": 200, "alpha": 2.0, "seeds": 2, "iterations": 20}
    with Client(server.base) as c:
        served = c.amp_simulation(body).model_dump(mode="json")
    here = AmpSimulationResponse.model_validate(answer(VERBS["amp_simulation"], body))
    here = here.model_dump(mode="json")
    for out in (served, here):
        out["solver"].pop("seconds")
        for run in out["runs"]:
            run.pop("seconds")
    assert served == here
    assert served["final_layer_overlaps_mean"][0] > 0.9  # alpha = 2 is far above alpha_c = 1/2
