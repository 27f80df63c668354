"""Write the OpenAPI document generated from the app: ``python -m service.openapi [path]``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .main import create_app
from .settings import Settings

DEFAULT = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def document() -> dict:
    # The document does not depend on the environment: build the app with default settings.
    return create_app(Settings(_env_file=None, redis_url=None, api_key=None)).openapi()


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else DEFAULT
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
