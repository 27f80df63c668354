"""Project files around the service: OpenAPI document, docker-compose, README, .ci/run."""
from __future__ import annotations

import ast
import json
import os
import re
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_openapi_document_is_up_to_date():
    from service.openapi import render

    committed = (ROOT / "openapi" / "openapi.json").read_text()
    assert committed == render(), "openapi/openapi.json is stale: run `python -m service.openapi`"


def test_openapi_has_an_example_per_endpoint():
    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    expected = {("post", "/v1/thresholds"), ("post", "/v1/state-evolution"), ("post", "/v1/sample-size"),
                ("get", "/v1/models"), ("get", "/v1/jobs/{job_id}"), ("delete", "/v1/jobs/{job_id}"),
                ("get", "/healthz"), ("get", "/readyz"), ("get", "/metrics")}
    found = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert expected <= found
    schemas = doc["components"]["schemas"]
    for method, path in expected:
        op = doc["paths"][path][method]
        ok = op["responses"]["200"]["content"]
        assert any("example" in c or "examples" in c for c in ok.values()), (method, path)
        if "requestBody" in op:
            ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert schemas[ref].get("examples"), ref
        for code, resp in op["responses"].items():
            if code in ("400", "401", "404", "413", "415", "422", "429"):
                assert list(resp["content"]) == ["application/problem+json"], (path, code)


def test_openapi_documents_the_body_problems():
    """Every operation that takes a body says what a bad body gets: 400 (not JSON), 413 (over
    STAIRCASE_MAX_BODY_BYTES), 415 (not declared as JSON), 422 (invalid fields)."""
    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    with_body = [(m, p, op) for p, ops in doc["paths"].items() for m, op in ops.items()
                 if "requestBody" in op]
    assert len(with_body) >= 5
    for method, path, op in with_body:
        assert {"400", "413", "415", "422"} <= set(op["responses"]), (method, path)
        assert list(op["requestBody"]["content"]) == ["application/json"], (method, path)


def test_api_key_is_required_only_when_configured():
    """X-API-Key is a security scheme; the committed document (no key configured) lets every
    operation be called without it, an app with a key requires it."""
    from service.main import create_app
    from service.settings import Settings

    doc = json.loads((ROOT / "openapi" / "openapi.json").read_text())
    (name, scheme), = doc["components"]["securitySchemes"].items()
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": "X-API-Key"}
    secured = [op for ops in doc["paths"].values() for op in ops.values() if "security" in op]
    assert len(secured) >= 10
    assert all(op["security"] == [{}, {name: []}] for op in secured)
    keyed = create_app(Settings(_env_file=None, redis_url=None, api_key="s3cret")).openapi()
    assert all(op["security"] == [{name: []}] for ops in keyed["paths"].values()
               for op in ops.values() if "security" in op)


def _repo_module(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for cand in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _defines(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return True
    # module-level __getattr__ providing the name lazily (service.main:app)
    return f'name == "{name}"' in path.read_text()


def _check_command(argv: list[str]) -> None:
    exe = os.path.basename(argv[0])
    if exe in ("python", "python3"):
        assert argv[1] == "-m", argv
        assert _repo_module(argv[2]) is not None, f"no module {argv[2]} in the repo"
        return
    if exe in ("uvicorn", "gunicorn"):
        target = next(a for a in argv[1:] if ":" in a and not a.startswith("-"))
        module, attr = target.split(":")
        path = _repo_module(module)
        assert path is not None, f"no module {module} in the repo"
        assert _defines(path, attr), f"{module} does not provide {attr}"
        return
    if exe == "arq":
        module, _, attr = argv[1].rpartition(".")
        path = _repo_module(module)
        assert path is not None and _defines(path, attr), argv
        return
    assert (ROOT / argv[0]).exists(), f"{argv[0]} is not a script in the repo"


def test_compose_commands_exist_in_the_repo():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "api", "worker"} <= set(services)
    checked = 0
    for name, svc in services.items():
        if "build" not in svc:  # a third-party image runs its own binary
            assert "image" in svc, name
            continue
        for key in ("entrypoint", "command"):
            if key in svc:
                argv = svc[key] if isinstance(svc[key], list) else shlex.split(svc[key])
                _check_command(argv)
                checked += 1
    assert checked >= 2
    worker = services["worker"]["command"]
    assert "service.worker" in " ".join(worker)
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])", dockerfile, re.M)
    _check_command(json.loads(cmd.group(1)))


def test_readme_quick_start_and_ci():
    readme = (ROOT / "README.md").read_text()
    quick = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```(?:bash|sh)?\n(.*?)```", quick, re.S)
    lines = [l for block in commands for l in block.strip().splitlines() if l.strip() and not l.startswith("#")]
    assert len(lines) == 2, lines
    assert "uvicorn service.main:app" in lines[0]
    test_command = lines[1]
    ci = ROOT / ".ci" / "run"
    assert os.access(ci, os.X_OK)
    assert test_command in ci.read_text()
    for path in ("/v1/thresholds", "/v1/state-evolution", "/v1/sample-size", "/v1/models", "/v1/jobs/",
                 "/healthz", "/readyz", "/metrics"):
        assert re.search(r"curl[^\n]*" + re.escape(path), readme), path
    assert "STAIRCASE_REDIS_URL" in readme
