"""``staircase``: the service's questions from the command line.

    staircase thresholds --layers 2 --tokens 2 --dimension 768 --precision fast
    staircase sample-size --link square --dimension 1000 --max-error 0.1 --format table
    staircase sweep --layers 1 --alphas 0.5,1,1.5 --plot out.png --url http://127.0.0.1:8000

With ``--url`` (or ``STAIRCASE_URL``) the question goes to that server (a 202 job is followed,
with a progress bar on stderr); without, it is computed in this process by the service's own
registry (``staircase.local``), so the body is the server's.  Prints the answer's JSON, or a
table with ``--format table``.  Exit codes: 0 answered, 2 bad input (the problem+json on
stderr), 3 service unavailable (unreachable, 5xx, or busy through the retries), 1 the job was
cancelled.
"""
from __future__ import annotations

import argparse
import asyncio
import csv
import os
import sys
from pathlib import Path
from typing import Optional

import orjson

from solvers.precision import PRECISIONS

from .client import (API_KEY_ENV, URL_ENV, VERBS, AsyncClient, JobCancelled, ProblemError,
                     ServiceUnavailable)

EXIT_OK, EXIT_CANCELLED, EXIT_BAD_INPUT, EXIT_UNAVAILABLE = 0, 1, 2, 3


class BadInput(Exception):
    """Input the CLI itself cannot read (a file, a list): exit 2."""


# ------------------------------------------------------------------ arguments

def numbers(text: str) -> list[float]:
    """'0.5,1,1.5' -> [0.5, 1.0, 1.5]."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


def number_or_list(text: str):
    """One number, or one per layer ('1,0.5')."""
    values = numbers(text)
    return values[0] if len(values) == 1 and "," not in text else values


def layers_target(text: str):
    return text if text == "all" else int(text)


def _parsers() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("service and output")
    g.add_argument("--url", default=os.environ.get(URL_ENV),
                   help=f"the service (default ${URL_ENV}); none: compute in this process")
    g.add_argument("--api-key", default=os.environ.get(API_KEY_ENV),
                   help=f"sent as X-API-Key (default ${API_KEY_ENV})")
    g.add_argument("--format", choices=("json", "table"), default="json")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bar on stderr (default: when stderr is a terminal)")
    g.add_argument("--no-wait", action="store_true",
                   help="print the job of a 202 instead of following it")
    g.add_argument("--timeout", type=float, default=300.0, help="seconds per HTTP request")

    model = argparse.ArgumentParser(add_help=False)
    m = model.add_argument_group("model (deep_attention unless --link/--indices; see GET /v1/models)")
    m.add_argument("--model-json", help="the model object as JSON, or @file; flags override its keys")
    m.add_argument("--layers", type=int, help="deep_attention: layers L")
    m.add_argument("--tokens", type=int, help="deep_attention: tokens M")
    m.add_argument("--skip", type=number_or_list, help="deep_attention: skip c (or one per layer: 1,0.5)")
    m.add_argument("--beta", type=number_or_list, help="deep_attention: beta (or one per layer)")
    m.add_argument("--link", help="multi_index: the link (square, sign, product, ...)")
    m.add_argument("--indices", type=int, help="multi_index: number of indices")
    m.add_argument("--noise", type=float, help="output noise variance")

    numerics = argparse.ArgumentParser(add_help=False)
    n = numerics.add_argument_group("numerics")
    n.add_argument("--precision", choices=PRECISIONS)
    n.add_argument("--seed", type=int)

    parser = argparse.ArgumentParser(prog="staircase", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    both = [common, model, numerics]

    p = sub.add_parser("thresholds", parents=both, help="weak-recovery thresholds, in learned order")
    p.add_argument("--dimension", type=int, help="input dimension D (adds samples_needed)")
    p.add_argument("--se-bracket", action="store_true", default=None,
                   help="check each threshold by SE at 0.95x and 1.05x")

    p = sub.add_parser("state-evolution", parents=both, help="SE fixed points per alpha")
    p.add_argument("--alphas", type=numbers, required=True, help="sample ratios, e.g. 0.5,1,1.5")

    p = sub.add_parser("sample-size", parents=both, help="samples N = alpha D reaching a target")
    p.add_argument("--dimension", type=int, required=True, help="input dimension D")
    p.add_argument("--target-layers", type=layers_target, default="all",
                   help="weak recovery of 'all' layers or of the first k (default all)")
    p.add_argument("--max-error", type=float,
                   help="target a plug-in prediction error at most this instead")

    p = sub.add_parser("amp-simulation", parents=[common, model],
                       help="GAMP on synthetic instances vs SE")
    p.add_argument("--dimension", type=int, required=True)
    p.add_argument("--alpha", type=float, required=True)
    p.add_argument("--seeds", type=int, required=True)
    p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--damping", type=float)

    p = sub.add_parser("sweep", parents=both, help="a grid of thresholds or SE points")
    p.add_argument("--compute", choices=("thresholds", "state_evolution"),
                   help="default: state_evolution with --alphas, else thresholds")
    p.add_argument("--parameter", help="the model parameter to vary (see GET /v1/models)")
    p.add_argument("--values", type=numbers, help="its values, e.g. 0.5,1,2")
    p.add_argument("--alphas", type=numbers, help="sample ratios (state_evolution)")
    p.add_argument("--plot", type=Path, help="write the sweep's plot here (.png or .svg)")

    p = sub.add_parser("compare", parents=both,
                       help="measured test errors (CSV) against the theory's prediction")
    p.add_argument("points", type=Path, help="CSV with columns samples,test_error[,error_bar]")
    p.add_argument("--dimension", type=int, required=True, help="input dimension D")
    p.add_argument("--metric", help="what test_error measures (default prediction_error)")
    p.add_argument("--plot", type=Path, help="write your points over the theory's curves here (.png or .svg)")
    return parser


def _model_json(text: str) -> dict:
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise BadInput(f"--model-json: {exc}") from None
    try:
        model = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"--model-json is not JSON: {exc}") from None
    if not isinstance(model, dict):
        raise BadInput("--model-json must be a JSON object")
    return model


def model_of(args) -> dict:
    """The request's model object: --model-json, with the flags given on top."""
    flags = {k: getattr(args, k) for k in ("layers", "tokens", "skip", "beta", "link", "indices",
                                           "noise") if getattr(args, k) is not None}
    if args.model_json:
        return {**_model_json(args.model_json), **flags}
    multi = "link" in flags or "indices" in flags
    return {"family": "multi_index" if multi else "deep_attention", **flags}


def read_points(path: Path) -> list[dict]:
    """The CSV's rows as comparison points (samples, test_error, optional error_bar)."""
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise BadInput(f"{path}: {exc}") from None
    points = []
    for line, row in enumerate(rows, start=2):
        try:
            point = {"samples": int(row["samples"]), "test_error": float(row["test_error"])}
            if (row.get("error_bar") or "").strip():
                point["error_bar"] = float(row["error_bar"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BadInput(f"{path} line {line}: columns samples (integer), test_error (number) "
                           f"and optionally error_bar (number) are required ({exc!r})") from None
        points.append(point)
    if not points:
        raise BadInput(f"{path}: no points (columns samples,test_error[,error_bar])")
    return points


def request_of(args) -> tuple[str, dict]:
    """The verb (a name of client.VERBS) and the JSON body the flags describe; flags not given
    are left out, so the service's defaults apply."""
    def given(**fields):
        return {k: v for k, v in fields.items() if v is not None}

    numerics = given(precision=getattr(args, "precision", None), seed=getattr(args, "seed", None))
    if args.verb == "thresholds":
        return "thresholds", {"model": model_of(args), **numerics,
                              **given(dimension=args.dimension, se_bracket=args.se_bracket)}
    if args.verb == "state-evolution":
        return "state_evolution", {"model": model_of(args), "alphas": args.alphas, **numerics}
    if args.verb == "sample-size":
        target = ({"kind": "prediction_error", "max": args.max_error} if args.max_error is not None
                  else {"kind": "weak_recovery", "layers": args.target_layers})
        return "sample_size", {"model": model_of(args), "dimension": args.dimension,
                               "target": target, **numerics}
    if args.verb == "amp-simulation":
        return "amp_simulation", {"model": model_of(args), "dimension": args.dimension,
                                  "alpha": args.alpha, "seeds": args.seeds,
                                  "iterations": args.iterations, **given(damping=args.damping)}
    if args.verb == "sweep":
        compute = args.compute or ("state_evolution" if args.alphas else "thresholds")
        grid = given(alpha=args.alphas, parameter=args.parameter, values=args.values)
        return "sweep", {"model": model_of(args), "compute": compute, "grid": grid, **numerics}
    if args.verb == "compare":
        return "comparison", {"model": model_of(args), "dimension": args.dimension,
                                        "points": read_points(args.points), **numerics,
                                        **given(metric=args.metric)}
    raise AssertionError(args.verb)


# ------------------------------------------------------------------ progress

class Bar:
    """A progress bar on stderr (rich), fed with job records or (done, total)."""

    def __init__(self, enabled: bool, label: str):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            # drawn even when stderr is not a terminal (--progress asked for it then)
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=Console(stderr=True, force_terminal=True),
                                transient=True)
            self.task = self.bar.add_task(label, total=None)
            self.label = label

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()

    def count(self, done: int, total: int, status: str = "running") -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total or None,
                            description=f"{self.label} {status}")

    def job(self, job: dict) -> None:
        p = job.get("progress") or {}
        status = job.get("status", "")
        if job.get("queue_position"):
            status += f" (#{job['queue_position']} in line)"
        self.count(int(p.get("done") or 0), int(p.get("total") or 0), status)


# ------------------------------------------------------------------ running

async def _over_http(client: AsyncClient, verb: str, body: dict, args) -> dict:
    answer = await client.ask(verb, body, wait=not args.no_wait)
    plot = getattr(args, "plot", None)
    if plot is not None and not args.no_wait:
        fmt = "svg" if plot.suffix.lower() == ".svg" else "png"
        plot.write_bytes(await client.plot(answer["id"], fmt))
    return answer


async def _remote(verb: str, body: dict, args, bar: Bar) -> dict:
    async with AsyncClient(args.url, api_key=args.api_key, timeout=args.timeout,
                           on_progress=bar.job) as client:
        return await _over_http(client, verb, body, args)


async def _in_process_app(verb: str, body: dict, args, bar: Bar) -> dict:
    from .local import serving

    async with serving(timeout=args.timeout, on_progress=bar.job) as client:
        return await _over_http(client, verb, body, args)


def answer(verb: str, body: dict, args, bar: Bar) -> dict:
    if args.url:
        return asyncio.run(_remote(verb, body, args, bar))
    from . import local

    if local.computation_of(VERBS[verb]) is None:  # a sweep: the job machinery, in this process
        return asyncio.run(_in_process_app(verb, body, args, bar))
    return local.answer(VERBS[verb], body, progress=bar.count)


def _err(text: str) -> None:
    print(f"staircase: {text}", file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    args = _parsers().parse_args(argv)
    show = args.progress if args.progress is not None else sys.stderr.isatty()
    try:
        verb, body = request_of(args)
        with Bar(show, args.verb) as bar:
            out = answer(verb, body, args, bar)
    except BadInput as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    except ProblemError as exc:
        _err(f"{exc.status} {exc}")
        sys.stderr.write(orjson.dumps(exc.problem, option=orjson.OPT_INDENT_2).decode() + "\n")
        return EXIT_BAD_INPUT
    except ServiceUnavailable as exc:
        _err(str(exc))
        return EXIT_UNAVAILABLE
    except JobCancelled as exc:
        _err(str(exc))
        return EXIT_CANCELLED
    if args.format == "table":
        from .tables import show_table

        show_table(verb, out)
    else:
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_OK
