"""The stand-ins' OpenAPI documents, as kept in docs/openapi/ for maintainers without a running service.

`python -m demo_services.openapi` (or `make openapi`) rewrites them after a change to the apps;
a test fails while the files and the apps disagree.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from demo_services.auth import TokenVerifier
from demo_services.mongo_app import SERVICE as MONGO_SERVICE
from demo_services.mongo_app import create_mongo_app
from demo_services.sql_app import SERVICE as SQL_SERVICE
from demo_services.sql_app import create_sql_app
from demo_services.store import DemoStore

DOCS_DIR = Path(__file__).resolve().parent.parent / "docs" / "openapi"


def openapi_documents() -> dict[str, dict[str, Any]]:
    """Each service's OpenAPI document, by service name, generated from its FastAPI app."""
    with tempfile.TemporaryDirectory() as scratch:
        # The document depends on the routes only; the store and key are placeholders.
        store = DemoStore(Path(scratch) / "openapi.sqlite3")
        documents = {}
        for service, create_app in ((SQL_SERVICE, create_sql_app), (MONGO_SERVICE, create_mongo_app)):
            verifier = TokenVerifier(audience=service, algorithm="HS256", verification_key="-" * 32)
            documents[service] = create_app(store, verifier).openapi()
        return documents


def render(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main() -> None:
    DOCS_DIR.mkdir(parents=True, exist_ok=True)
    for service, document in openapi_documents().items():
        path = DOCS_DIR / f"{service}.json"
        path.write_text(render(document), encoding="utf-8")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
