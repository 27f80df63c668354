"""benchmarks/load_test.py builds its commands right (the load run itself is not a test: it
takes minutes and the machine's CPUs; see the README, "Load test")."""
from __future__ import annotations

import importlib.util
import json

from service_support import ROOT


def load_script():
    spec = importlib.util.spec_from_file_location("load_test", ROOT / "benchmarks" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_arguments_and_locust_commands():
    lt = load_script()
    args = lt.parse_args([])
    assert (args.seconds, args.cached_users, args.cold_users, args.expensive) == (20.0, 20, 2, 2)
    assert args.redis is None and args.url is None and not args.slow_model and args.seed_base >= 1000
    cmd = lt.locust_command("http://127.0.0.1:9", "ColdUser", 3, 25, "/tmp/x/ColdUser")
    assert cmd[1:4] == ["-f", str(ROOT / "benchmarks" / "locustfile.py"), "ColdUser"]
    for flag, value in (("--host", "http://127.0.0.1:9"), ("-u", "3"), ("-r", "3"), ("-t", "25s"),
                        ("--csv", "/tmp/x/ColdUser")):
        assert cmd[cmd.index(flag) + 1] == value, (flag, cmd)
    assert "--headless" in cmd
    assert (ROOT / "benchmarks" / "locustfile.py").exists()


def test_server_command_and_environment(monkeypatch):
    lt = load_script()
    monkeypatch.setenv("STAIRCASE_API_KEY", "not passed on")
    plain = lt.server_command(8123, slow_model=False)
    assert plain[1:4] == ["-m", "uvicorn", "service.main:app"] and "8123" in plain
    slow = lt.server_command(8123, slow_model=True)
    assert slow[slow.index("--factory") + 1] == "slow_app:create"
    assert (ROOT / "tests" / "slow_app.py").exists()

    disk = lt.server_env(lt.parse_args([]), "p:", "/tmp/c")
    assert disk["STAIRCASE_REDIS_URL"] == "" and disk["STAIRCASE_CACHE_DIR"] == "/tmp/c"
    assert disk["STAIRCASE_WORKERS"] == "2" and "STAIRCASE_API_KEY" not in disk
    red = lt.server_env(lt.parse_args(["--redis", "redis://h:1/0", "--slow-model"]), "p:", "/tmp/c")
    assert red["STAIRCASE_REDIS_URL"] == "redis://h:1/0" and red["STAIRCASE_REDIS_PREFIX"] == "p:"
    assert str(ROOT / "tests") in red["PYTHONPATH"].split(":") and red["SLOW_APP_HOOK"] == "slow_model:hook"


def test_dry_run_prints_the_commands(capsys):
    assert load_script().main(["--dry-run", "--seconds", "7"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and "uvicorn" in out[0] and all("-t 7s" in line for line in out[1:])


def test_summary_from_the_record(tmp_path):
    lt = load_script()
    record = tmp_path / "r.jsonl"
    rows = [{"name": "cold", "end": 100.0 + i, "seconds": 0.1 * (i + 1), "ok": True} for i in range(5)]
    rows += [{"name": "cold", "end": 106.0, "seconds": 9.0, "ok": False},
             {"name": "cold-solver", "seconds": 0.05}]
    record.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = lt.summarise("x", str(record), "cold")
    assert (out["requests"], out["failures"]) == (6, 1)
    assert out["rps"] == 1.0 and round(out["p50_ms"]) == 300 and round(out["p99_ms"]) == 500
    assert round(out["solver_p50_ms"]) == 50
