"""The README's comparison example: GAMP at D = 1000 on the square link, its measured test
errors fed back to POST /v1/comparisons as the "user's" points.

Writes docs/comparison_example.png (the plot) and docs/comparison_example.json (the request
and the answer).  About 5 minutes on one core:

    nice -n 10 python benchmarks/comparison_example.py
"""
from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

import _checkout  # noqa: F401  (this checkout's solvers, not the installed ones)
import solvers
from solvers.amp import amp_simulation

ROOT = Path(__file__).resolve().parents[1]
MODEL = {"family": "multi_index", "link": "square"}
DIMENSION = 1000
ALPHAS = (0.3, 0.5, 0.7, 0.85, 1.0, 1.15, 1.3, 1.5, 2.0)
SEEDS = 4
ITERATIONS = 100


def measured_points() -> list[dict]:
    spec = solvers.spec_from_dict(MODEL)
    points = []
    for alpha in ALPHAS:
        t0 = time.perf_counter()
        res = amp_simulation(spec, DIMENSION, alpha, seeds=SEEDS, iterations=ITERATIONS)
        errors = [r.prediction_error for r in res.runs]
        points.append({"samples": int(res.runs[0].n_samples),
                       "test_error": float(f"{statistics.mean(errors):.4g}"),  # small errors keep their digits
                       "error_bar": float(f"{statistics.stdev(errors):.4g}")})
        print(f"alpha {alpha}: GAMP test errors {errors} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr)
    return points


async def compare(request: dict) -> tuple[dict, bytes]:
    from service.main import create_app
    from service.settings import Settings

    with tempfile.TemporaryDirectory() as cache:
        app = create_app(Settings(_env_file=None, cache_dir=cache, workers=1, sync_timeout=1800.0,
                                  redis_url=None, api_key=None))
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                         timeout=1800) as c:
                r = await c.post("/v1/comparisons", json=request)
                r.raise_for_status()
                png = await c.get(r.json()["plot"]["png"])
                png.raise_for_status()
                return r.json(), png.content


def main() -> None:
    request = {"model": MODEL, "dimension": DIMENSION, "points": measured_points(), "precision": "standard"}
    answer, png = asyncio.run(compare(request))
    (ROOT / "docs" / "comparison_example.png").write_bytes(png)
    (ROOT / "docs" / "comparison_example.json").write_text(
        json.dumps({"request": request, "answer": answer}, indent=1) + "\n")
    print(json.dumps(answer["summary"], indent=1))


if __name__ == "__main__":
    main()
