"""The ``staircase`` command run as a subprocess: in-process (no URL) and against a live uvicorn
that answers cold questions with 202 jobs; its exit codes (0 answered, 2 bad input with the
problem on stderr, 3 unreachable), ``--format table``, sweeps with ``--plot``.

The questions are cheap: the square link y = z^2, whose weak-recovery threshold is
alpha_c = 1/2 in closed form (THEORY.md, the linear-stability threshold of an even link)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from service_support import ROOT, free_port, jobs_server

SQUARE = ["--link", "square", "--precision", "fast"]
SQUARE_THRESHOLD = 0.5


def cli(*args: str, url: str | None = None, env: dict | None = None, timeout: float = 600):
    clean = {k: v for k, v in os.environ.items() if k not in ("STAIRCASE_URL", "STAIRCASE_API_KEY")}
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if url is not None:
        clean["STAIRCASE_URL"] = url
    return subprocess.run([sys.executable, "-m", "staircase", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout, env={**clean, **(env or {})})


def run_main(capsys, monkeypatch, *args: str):
    """The same command in this process (``staircase.cli.main``): exit code, stdout, stderr."""
    from staircase.cli import main

    monkeypatch.delenv("STAIRCASE_URL", raising=False)
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = jobs_server(tmp_path_factory.mktemp("cli-cache"))
    yield s
    s.stop()


def _same_but_timing(a: dict, b: dict) -> None:
    """Two answers to one question: equal but for the wall time and the cache flag."""
    for body in (a, b):
        body["solver"].pop("seconds")
        body.pop("cache")
    assert a == b


def test_in_process_answer_is_the_servers_body(server):
    local = cli("thresholds", *SQUARE, "--dimension", "1000", "--seed", "11")
    assert local.returncode == 0, local.stderr
    remote = cli("thresholds", *SQUARE, "--dimension", "1000", "--seed", "11", url=server.base)
    assert remote.returncode == 0, remote.stderr
    a, b = json.loads(local.stdout), json.loads(remote.stdout)
    (t,) = a["thresholds"]
    assert abs(t["alpha"] - SQUARE_THRESHOLD) <= 2 * t["ci95"]
    assert t["samples_needed"] == -(-t["alpha"] * 1000 // 1)
    assert b["cache"] == "miss"  # computed by the server's job, followed after its 202
    _same_but_timing(a, b)


def test_no_wait_prints_the_job_and_the_answer_follows(server):
    r = cli("state-evolution", *SQUARE, "--alphas", "1.0", "--seed", "12", "--no-wait", url=server.base)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)
    assert job["kind"] == "state_evolution" and job["status"] in ("queued", "running", "done")
    r = cli("state-evolution", *SQUARE, "--alphas", "1.0", "--seed", "12", url=server.base)
    assert r.returncode == 0, r.stderr
    (point,) = json.loads(r.stdout)["points"]
    assert point["alpha"] == 1.0 and point["uninformed"]["layer_overlaps"][0] > 0.1  # learned above 1/2


def _problem(stderr: str) -> dict:
    return json.loads(stderr[stderr.index("{"):])


def test_bad_input_exits_2_with_the_servers_problem(server, capsys, monkeypatch):
    served = cli("thresholds", "--layers", "9", "--tokens", "2", url=server.base)
    code, out, err = run_main(capsys, monkeypatch, "thresholds", "--layers", "9", "--tokens", "2")
    assert served.returncode == code == 2 and served.stdout == out == ""
    assert "model.layers: Input should be less than or equal to 4; allowed: an integer in [1, 4]" in err
    assert served.stderr == err  # in-process: the very problem the server answered
    assert _problem(err)["status"] == 422 and _problem(err)["field"] == "model.layers"
    # a value only the solvers refuse (the link's number of indices): the same path
    served = cli("thresholds", "--link", "product", "--indices", "1", url=server.base)
    code, out, err = run_main(capsys, monkeypatch, "thresholds", "--link", "product", "--indices", "1")
    assert served.returncode == code == 2 and served.stderr == err
    assert _problem(err)["field"] == "model.indices"
    assert _problem(err)["type"] == "/problems/invalid-parameter"


def test_unreachable_server_exits_3():
    r = cli("thresholds", *SQUARE, url=f"http://127.0.0.1:{free_port()}")
    assert r.returncode == 3
    assert "cannot reach the service" in r.stderr


def test_unreadable_points_file_exits_2(tmp_path, capsys, monkeypatch):
    bad = tmp_path / "points.csv"
    bad.write_text("samples,test_error\n100,abc\n")
    code, _, err = run_main(capsys, monkeypatch, "compare", str(bad), "--link", "square",
                            "--dimension", "100")
    assert code == 2 and "line 2" in err


def test_table_format(capsys, monkeypatch):
    code, out, err = run_main(capsys, monkeypatch, "sample-size", *SQUARE, "--dimension", "1000",
                              "--format", "table")
    assert code == 0, err
    assert "sample size: link=square" in out and "weak_recovery" in out and "self-checks" in out
    code, out, err = run_main(capsys, monkeypatch, "thresholds", *SQUARE, "--format", "table")
    assert code == 0, err
    assert "linear_stability" in out and "0.50" in out


def test_sweep_follows_its_job_and_writes_the_plot(server, tmp_path):
    png = tmp_path / "sweep.png"
    r = cli("sweep", *SQUARE, "--alphas", "0.25,1.0", "--seed", "13", "--plot", str(png),
            url=server.base)
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)
    assert sweep["kind"] == "sweep" and sweep["status"] == "done"
    overlaps = {p["alpha"]: p["result"]["uninformed"]["layer_overlaps"][0]
                for p in sweep["result"]["points"] if p["kind"] == "state_evolution"}
    assert overlaps[0.25] < 1e-3 and overlaps[1.0] > 0.1  # below and above alpha_c = 1/2
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_shows_the_job(server):
    r = cli("state-evolution", *SQUARE, "--alphas", "1.0", "--seed", "14", "--progress", url=server.base)
    assert r.returncode == 0, r.stderr
    drawn = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", r.stderr)  # the bar, without its ANSI codes
    assert re.search(r"state-evolution done .* (\d+)/\1 ", drawn), drawn  # the job's record, finished
    r = cli("state-evolution", *SQUARE, "--alphas", "1.0", "--seed", "14", url=server.base)
    assert r.stderr == ""  # not a terminal: no bar unless asked for


@pytest.mark.parametrize("where", ["in-process", "server"])
def test_compare_posts_the_csv_points_and_writes_the_plot(server, tmp_path, where):
    points = tmp_path / "points.csv"
    points.write_text("samples,test_error,error_bar\n200,0.9,0.05\n2000,0.05,0.01\n")
    png = tmp_path / "compare.png"
    env = {"STAIRCASE_WARM_UP": "false", "STAIRCASE_WORKERS": "1", "STAIRCASE_CACHE_DIR": str(tmp_path / "cache")}
    r = cli("compare", str(points), *SQUARE, "--dimension", "1000", "--precision", "fast", "--plot", str(png),
            url=server.base if where == "server" else None, env=env if where == "in-process" else None)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["model"]["link"] == "square" and [p["samples"] for p in body["points"]] == [200, 2000]
    assert png.read_bytes().startswith(b"\x89PNG")


def test_in_process_sweep_runs_the_app_here(tmp_path):
    """No URL: a sweep runs the service's app (its pool, a disk cache) inside the command."""
    svg = tmp_path / "sweep.svg"
    r = cli("sweep", *SQUARE, "--alphas", "0.25,1.0", "--plot", str(svg),
            env={"STAIRCASE_WARM_UP": "false", "STAIRCASE_WORKERS": "1",
                 "STAIRCASE_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    sweep = json.loads(r.stdout)
    assert sweep["status"] == "done" and sweep["result"]["backend"] == "local"
    assert svg.read_text().lstrip().startswith("<?xml") and "<svg" in svg.read_text()


def test_the_installed_command_runs_outside_the_checkout(tmp_path):
    """`pip install -e .` (the README's first step) installs the `staircase` script."""
    exe = shutil.which("staircase")
    assert exe, "the staircase script is not installed: run pip install -e '.[test]'"
    r = subprocess.run([exe, "thresholds", "--link", "sign", "--layers", "9"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "model.layers" in r.stderr, r.stderr
