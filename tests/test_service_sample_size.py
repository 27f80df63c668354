"""solvers.sample_size (pure numerics behind POST /v1/sample-size) and its route."""
from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient

import solvers
from solvers.sample_size import check_target, sample_size, samples_for, weak_recovery
from solvers.state_evolution import state_evolution

from service.main import create_app
from service_support import PHASE, pool, settings  # noqa: F401


def plugin_error(spec, alpha):
    p = state_evolution(spec, [alpha], precision="fast").points[0]
    return getattr(p, p.bayes_optimal).prediction_error_plugin


def test_check_target():
    spec = solvers.DeepAttentionSpec(layers=2)
    assert check_target(spec, {"kind": "weak_recovery"}) == {"kind": "weak_recovery", "layers": "all"}
    assert check_target(spec, {"kind": "weak_recovery", "layers": 2})["layers"] == 2
    assert check_target(spec, {"kind": "prediction_error", "max": 1}) == {"kind": "prediction_error",
                                                                           "max": 1.0}
    for bad, field in [({"kind": "weak_recovery", "layers": 3}, "target.layers"),
                       ({"kind": "weak_recovery", "layers": True}, "target.layers"),
                       ({"kind": "prediction_error", "max": 0}, "target.max"),
                       ({"kind": "prediction_error", "max": float("nan")}, "target.max"),
                       ({"kind": "prediction_error", "max": 1e4}, "target.max"),  # > MAX_PREDICTION_ERROR
                       ({"kind": "accuracy"}, "target.kind")]:
        with pytest.raises(solvers.SpecError) as e:
            check_target(spec, bad)
        assert e.value.parameter == field


def test_weak_recovery_picks_kth_threshold():
    ths = [{"alpha": 0.7, "ci95": 0.01, "kind": "staircase"},
           {"alpha": 0.2, "ci95": 0.001, "kind": "linear_stability"}]
    assert weak_recovery(ths, {"layers": "all"}) == (0.7, 0.01, "weak-recovery threshold (staircase)")
    assert weak_recovery(ths, {"layers": 1})[0] == 0.2
    assert samples_for(0.5, 768) == 384 and samples_for(0.5001, 768) == 385 and samples_for(0, 10) == 1


def test_sample_size_rejects_bad_dimension():
    with pytest.raises(solvers.SpecError) as e:
        sample_size(solvers.MultiIndexSpec(), 0, {"kind": "weak_recovery"}, precision="fast")
    assert e.value.parameter == "dimension"


def test_weak_recovery_phase_retrieval():
    r = sample_size(solvers.MultiIndexSpec(link="square"), 1000, {"kind": "weak_recovery"},
                    precision="fast")
    assert abs(r.alpha - 0.5) <= max(3 * r.ci95, 0.02)
    assert r.samples == math.ceil(r.alpha * 1000)


def test_prediction_error_bisection_brackets_the_crossing():
    """Noiseless phase retrieval: the plug-in error drops to 0 at perfect recovery (alpha = 1)."""
    spec = solvers.MultiIndexSpec(link="square")
    target = {"kind": "prediction_error", "max": 0.5}
    calls = []
    r = sample_size(spec, 1000, target, precision="fast", progress=lambda d, t: calls.append((d, t)))
    assert plugin_error(spec, r.alpha) <= 0.5
    assert plugin_error(spec, r.alpha - r.ci95) > 0.5
    assert r.ci95 <= 0.02 * r.alpha + 1e-12
    assert r.samples == math.ceil(r.alpha * 1000 - 1e-9)
    assert 0.9 < r.alpha < 1.1
    assert calls and calls[-1][0] == calls[-1][1]
    assert r.to_dict()["target"] == target


def test_sample_size_route_prediction_error(pool, tmp_path):  # noqa: F811
    app = create_app(settings(tmp_path), pool=pool)
    body = {"model": PHASE, "dimension": 1000, "precision": "fast",
            "target": {"kind": "prediction_error", "max": 0.5}}
    with TestClient(app) as c:
        r = c.post("/v1/sample-size", json=body)
        assert r.status_code == 200, r.text
        out = r.json()
        direct = sample_size(solvers.MultiIndexSpec(link="square"), 1000, body["target"], precision="fast")
        assert out["alpha"] == pytest.approx(direct.alpha)
        assert out["samples"] == direct.samples and out["cache"] == "miss"
        again = c.post("/v1/sample-size", json={**body, "dimension": 2000}).json()
        assert again["cache"] == "hit" and again["samples"] == math.ceil(direct.alpha * 2000 - 1e-9)
        weak = c.post("/v1/sample-size", json={**body, "target": {"kind": "weak_recovery"}}).json()
        assert weak["cache"] == "miss" and abs(weak["alpha"] - 0.5) < 0.05
        thr = c.post("/v1/thresholds", json={"model": PHASE, "precision": "fast"}).json()
        assert thr["cache"] == "hit"  # the weak-recovery answer was read off these thresholds
