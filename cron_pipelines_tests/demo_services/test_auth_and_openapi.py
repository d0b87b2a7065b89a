"""Every /v1 endpoint demands a valid token for its own service (docs/services.md, Talking to a service); the API description is public."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from cron_pipelines.clients.tokens import Algorithm, TokenIssuer
from cron_pipelines_tests.demo_services.helpers import assert_error
from cron_pipelines_tests.support.keys import TEST_JWT_SECRET, private_key_pem
from cron_pipelines_tests.support.services import ServiceWorld
from demo_services import DemoStore, ServiceServer, create_mongo_app, create_sql_app
from demo_services.auth import TokenVerifier
from demo_services.openapi import DOCS_DIR, openapi_documents, render

SQL_ENDPOINTS = [
    ("GET", "/v1/dues"),
    ("POST", "/v1/dues/overdue-marks"),
    ("GET", "/v1/verifications"),
    ("POST", "/v1/verifications/decisions"),
    ("GET", "/_admin/request-counts"),
]
MONGO_ENDPOINTS = [
    ("GET", "/v1/users/inactive"),
    ("POST", "/v1/users/deactivations"),
    ("GET", "/v1/verification-attempts"),
    ("POST", "/v1/notifications/claims"),
    ("POST", "/v1/notifications/outcomes"),
    ("GET", "/v1/notifications"),
    ("POST", "/v1/notification-preferences/lookup"),
    ("POST", "/v1/notification-preferences/opt-outs"),
    ("GET", "/_admin/request-counts"),
]


def forge(
    *,
    key: str = TEST_JWT_SECRET,
    algorithm: str = "HS256",
    headers: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **overrides: Any,
) -> str:
    """A token like TokenIssuer's for sql-service, with claims replaced or dropped."""
    now = int(time.time())
    claims = {
        "iss": "cron-pipelines",
        "sub": "cron-pipelines",
        "aud": "sql-service",
        "iat": now,
        "nbf": now,
        "exp": now + 120,
        "jti": uuid.uuid4().hex,
        **overrides,
    }
    for name in drop:
        del claims[name]
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)


def test_a_token_for_the_service_is_accepted(services: ServiceWorld) -> None:
    response = httpx.get(f"{services.sql_url}/v1/dues", headers={"Authorization": f"Bearer {forge()}"})
    assert response.status_code == 200
    assert response.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(("method", "path"), SQL_ENDPOINTS)
def test_every_sql_endpoint_refuses_a_request_without_token(services: ServiceWorld, method: str, path: str) -> None:
    response = httpx.request(method, services.sql_url + path, json={"items": []})
    assert "missing" in assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), MONGO_ENDPOINTS)
def test_every_mongo_endpoint_refuses_a_request_without_token(services: ServiceWorld, method: str, path: str) -> None:
    response = httpx.request(method, services.mongo_url + path, json={"items": []})
    assert_error(response, 401, "unauthorized")


def _hs256_signed_with(key: str, claims: dict[str, Any]) -> str:
    # PyJWT rightly refuses a PEM key as an HMAC secret, so an attacker's token is built by hand.
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = f"{b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def _other_secret() -> str:
    return "another-secret-of-enough-length-0123456789"


REFUSED_TOKENS: dict[str, Callable[[], str]] = {
    "expired": lambda: forge(iat=int(time.time()) - 400, nbf=int(time.time()) - 400, exp=int(time.time()) - 120),
    "not yet valid": lambda: forge(nbf=int(time.time()) + 120),
    "badly signed": lambda: forge(key=_other_secret()),
    "for the other service": lambda: forge(aud="mongo-service"),
    "for both services": lambda: forge(aud=["sql-service", "mongo-service"]),
    "from another issuer": lambda: forge(iss="someone-else"),
    "for another subject": lambda: forge(sub="someone-else"),
    "living longer than 300 s": lambda: forge(exp=int(time.time()) + 301),
    "without jti": lambda: forge(drop=("jti",)),
    "without exp": lambda: forge(drop=("exp",)),
    "unsigned (alg none)": lambda: forge(key="", algorithm="none"),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("case", list(REFUSED_TOKENS))
def test_bad_tokens_are_refused_with_401_and_never_echoed(services: ServiceWorld, case: str) -> None:
    token = REFUSED_TOKENS[case]()
    response = httpx.get(f"{services.sql_url}/v1/dues", headers={"Authorization": f"Bearer {token}"})
    assert_error(response, 401, "unauthorized")
    assert token not in response.text
    assert not any(token in value for value in response.headers.values())


def test_the_other_services_real_token_is_refused_both_ways(services: ServiceWorld) -> None:
    to_sql = httpx.get(f"{services.sql_url}/v1/dues", headers=services.auth_headers("mongo-service"))
    to_mongo = httpx.get(f"{services.mongo_url}/v1/notifications", headers=services.auth_headers("sql-service"))
    assert "audience" in assert_error(to_sql, 401, "unauthorized").lower()
    assert "audience" in assert_error(to_mongo, 401, "unauthorized").lower()


def test_a_non_bearer_scheme_counts_as_no_token(services: ServiceWorld) -> None:
    response = httpx.get(f"{services.sql_url}/v1/dues", headers={"Authorization": f"Basic {forge()}"})
    assert assert_error(response, 401, "unauthorized") == "missing bearer token"


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "EdDSA"])
def test_asymmetric_algorithms_verify_with_the_public_key(demo_store: DemoStore, algorithm: Algorithm) -> None:
    issuer, impostor = (
        TokenIssuer(algorithm=algorithm, signing_key=private_key_pem(algorithm), key_id="key-2026") for _ in range(2)
    )
    verifier = TokenVerifier.for_issuer(issuer, "mongo-service")
    assert "PRIVATE" not in verifier.verification_key
    with ServiceServer(create_mongo_app(demo_store, verifier)) as server:

        def get(token: str) -> httpx.Response:
            return httpx.get(f"{server.url}/v1/notifications", headers={"Authorization": f"Bearer {token}"})

        assert get(issuer.token_for("mongo-service")).status_code == 200
        assert_error(get(impostor.token_for("mongo-service")), 401, "unauthorized")
        assert_error(get(issuer.token_for("sql-service")), 401, "unauthorized")
        claims = jwt.decode(issuer.token_for("mongo-service"), options={"verify_signature": False})
        wrong_kid = jwt.encode(claims, issuer.signing_key, algorithm=algorithm, headers={"kid": "key-2019"})
        assert "key id" in assert_error(get(wrong_kid), 401, "unauthorized")
        # The classic confusion attack: an HS256 token keyed with the (public) verification key.
        confused = _hs256_signed_with(verifier.verification_key, {**claims, "jti": uuid.uuid4().hex})
        assert "algorithm" in assert_error(get(confused), 401, "unauthorized")


def test_an_app_refuses_a_verifier_for_the_other_service(demo_store: DemoStore, token_issuer: TokenIssuer) -> None:
    with pytest.raises(ValueError, match="sql-service"):
        create_sql_app(demo_store, TokenVerifier.for_issuer(token_issuer, "mongo-service"))
    with pytest.raises(ValueError, match="mongo-service"):
        create_mongo_app(demo_store, TokenVerifier.for_issuer(token_issuer, "sql-service"))


def test_the_openapi_document_is_public_and_lists_every_endpoint(services: ServiceWorld) -> None:
    sql_doc = httpx.get(f"{services.sql_url}/openapi.json").json()
    mongo_doc = httpx.get(f"{services.mongo_url}/openapi.json").json()
    assert sql_doc["info"]["title"] == "sql-service (stand-in)"
    assert mongo_doc["info"]["title"] == "mongo-service (stand-in)"
    for document, endpoints in ((sql_doc, SQL_ENDPOINTS), (mongo_doc, MONGO_ENDPOINTS)):
        for method, path in endpoints:
            operation = document["paths"][path][method.lower()]
            assert operation["security"] == [{"HTTPBearer": []}], path
            assert "401" in operation["responses"], path
        listed = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
        assert listed == set(endpoints)
    assert httpx.get(f"{services.sql_url}/docs").status_code == 200


def test_the_openapi_document_shows_the_contract_payloads(services: ServiceWorld) -> None:
    sql_doc = httpx.get(f"{services.sql_url}/openapi.json").json()
    mongo_doc = httpx.get(f"{services.mongo_url}/openapi.json").json()
    due_schema = sql_doc["components"]["schemas"]["Due"]
    assert {"id", "user_id", "amount_cents", "currency", "due_date", "status", "user"} <= set(due_schema["properties"])
    dues_page = sql_doc["paths"]["/v1/dues"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert dues_page["$ref"].endswith("Page_Due_")
    assert {"ClaimResult", "NotificationRecord", "NotificationClaim", "InactiveUser", "ErrorBody"} <= set(
        mongo_doc["components"]["schemas"]
    )
    parameters = {p["name"] for p in mongo_doc["paths"]["/v1/notifications"]["get"]["parameters"]}
    assert parameters == {"user_id", "kind", "status", "since", "until", "limit", "cursor"}


def test_the_openapi_documents_in_docs_match_what_the_services_serve(services: ServiceWorld) -> None:
    """docs/openapi/ is the contract a maintainer reads: it must be what the apps serve (`make openapi`)."""
    served = {
        "sql-service": httpx.get(f"{services.sql_url}/openapi.json").json(),
        "mongo-service": httpx.get(f"{services.mongo_url}/openapi.json").json(),
    }
    assert openapi_documents() == served
    for service, document in served.items():
        kept = (DOCS_DIR / f"{service}.json").read_text(encoding="utf-8")
        assert kept == render(document), f"docs/openapi/{service}.json has drifted: run `make openapi`"
