"""Snapshot the service's answers on fixed seeds, to show a refactor leaves the numbers alone.

    python benchmarks/snapshot_answers.py --out before.json      # on the old code
    python benchmarks/snapshot_answers.py --out after.json       # on the new code
    python benchmarks/snapshot_answers.py --compare before.json after.json

Asks /v1/thresholds, /v1/state-evolution, /v1/sample-size and /v1/amp-simulations about the
paper's model, phase retrieval and committee_sign at precision ``fast``, in-process on a fresh
embedded cache (no Redis), and writes the answers without their timings and cache markers.
``--models`` and ``--endpoints`` ask a subset.  ``--compare`` prints every number that differs (bit for bit) and exits 1 if any does.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "paper": {"family": "deep_attention", "layers": 2, "tokens": 2, "skip": 1.0, "beta": 1.0},
    "phase_retrieval": {"family": "multi_index", "link": "square"},
    "committee_sign": {"family": "multi_index", "link": "committee_sign"},
}
# committee_sign's fixed points need nested quadrature over non-diagonal V (minutes each): one alpha.
ALPHAS = {"paper": [0.3, 0.8], "phase_retrieval": [0.3, 0.8], "committee_sign": [2.0]}
AMP_ALPHA = {"paper": 1.2, "phase_retrieval": 2.0, "committee_sign": 2.0}
# Fields that measure the run, not the answer.
ENDPOINTS = ("thresholds", "state-evolution", "sample-size", "amp-simulations")
VOLATILE = {"cache", "seconds", "elapsed_seconds", "compute_seconds", "created", "updated",
            "started", "finished", "id", "job_id", "worker", "computed_at", "wall_seconds",
            "links", "location", "timing"}


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [_strip(v) for v in x]
    return x


def _wait(client, location, timeout=7200):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(location).json()
        if body["status"] in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise RuntimeError(f"{location} did not finish")


def _ask(client, path, body):
    r = client.post(path, json=body, headers={"Prefer": "respond-async"})
    if r.status_code == 202:
        job = _wait(client, r.headers["location"])
        if job["status"] != "done":
            raise RuntimeError(f"{path} {body}: {job}")
        return job["result"]
    if r.status_code != 200:
        raise RuntimeError(f"{path} {body}: {r.status_code} {r.text}")
    return r.json()


def snapshot(models, endpoints=ENDPOINTS, out_path=None) -> dict:
    from fastapi.testclient import TestClient

    from service.main import create_app
    try:  # the layout before the one-house redesign first, to snapshot old checkouts
        from service.config import Settings
    except ImportError:
        from service.settings import Settings

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, cache_dir=tmp, workers=2, sync_timeout=3600.0,
                            redis_url=None, api_key=None)
        with TestClient(create_app(settings)) as client:
            for _ in range(600):
                if client.get("/readyz").status_code == 200:
                    break
                time.sleep(1)
            for name in models:
                model = MODELS[name]
                t0 = time.perf_counter()
                asks = {
                    "thresholds": ("/v1/thresholds", {"model": model, "precision": "fast"}),
                    "state-evolution": ("/v1/state-evolution", {
                        "model": model, "alphas": ALPHAS[name], "precision": "fast"}),
                    "sample-size": ("/v1/sample-size", {
                        "model": model, "dimension": 1000, "precision": "fast",
                        "target": {"kind": "weak_recovery", "layers": "all"}}),
                    "amp-simulations": ("/v1/amp-simulations", {
                        "model": model, "dimension": 200, "alpha": AMP_ALPHA[name], "seeds": 2,
                        "iterations": 15}),
                }
                for endpoint in endpoints:
                    out[f"{name}/{endpoint}"] = _ask(client, *asks[endpoint])
                print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
                if out_path is not None:  # keep what is done if a later model fails
                    out_path.write_text(json.dumps(_strip(out), indent=1, sort_keys=True))
    return _strip(out)


def _diff(a, b, path=""):
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                yield f"{path}/{k}: only in {'after' if k in b else 'before'}"
            else:
                yield from _diff(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            yield from _diff(x, y, f"{path}[{i}]")
    elif a != b:
        yield f"{path}: {a!r} -> {b!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    ap.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS))
    ap.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args()
    if args.compare:
        before, after = (json.loads(p.read_text()) for p in args.compare)
        diffs = list(_diff(before, after))
        print("\n".join(diffs) or "identical: every number bit for bit")
        return 1 if diffs else 0
    data = snapshot(args.models, args.endpoints, args.out)
    text = json.dumps(data, indent=1, sort_keys=True)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
