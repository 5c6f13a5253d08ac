"""JSON log lines and the secret redactor (backchannel/observability/logging.py)."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backchannel.db.users import User
from backchannel.endpoints.gateway import ServiceApp
from backchannel.errors import OAuthError, render_oauth_error, render_unexpected_error
from backchannel.observability.logging import (
    REDACTED,
    JsonFormatter,
    RedactingFormatter,
    configure_logging,
    redact_text,
)
from backchannel.observability.metrics import Metrics
from tests.conftest import RegisteredClient
from tests.support.ciba import decide, poll, rewind, start_auth_req_id

JWT = (
    "eyJhbGciOiJFUzI1NiIsImtpZCI6ImsxIn0"
    ".eyJzdWIiOiJhbGljZSIsImF1ZCI6InJwIn0"
    ".MEUCIQDx3m0Zk6Jc4sQ9u4Yv8e9pL2nR7tW1aB5cD6eF7gH8iJ"
)
CLIENT_SECRET = "s3cr3t-Client-Secret-Value_0123456789abcdef"
AUTH_REQ_ID = "Q2xpZW50LUF1dGgtUmVxLUlk_0123456789-abcdefXYZ"


class Captured:
    """Log lines written through one handler, as text and as parsed JSON."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.text.splitlines()]


@pytest.fixture
def json_logs() -> Iterator[Captured]:
    """Every record of every logger, at DEBUG, through the JSON formatter."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def test_a_log_line_is_one_json_object_with_the_standard_fields(json_logs: Captured) -> None:
    logging.getLogger("backchannel.test").warning("poll for %s took %d ms", "rp", 12)
    [line] = json_logs.lines()
    assert line["level"] == "WARNING"
    assert line["logger"] == "backchannel.test"
    assert line["message"] == "poll for rp took 12 ms"
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    assert "request_id" not in line  # not inside a request


def test_extra_fields_are_kept_and_secret_named_ones_masked(json_logs: Captured) -> None:
    logging.getLogger("backchannel.test").info(
        "client authenticated",
        extra={
            "client_id": "rp-1",
            "client_secret": CLIENT_SECRET,
            "form": {"auth_req_id": AUTH_REQ_ID, "grant_type": "ciba", "scope": ["openid"]},
            "Authorization": "Basic cnAtMTpzZWNyZXQ=",
            "attempts": 3,
        },
    )
    [line] = json_logs.lines()
    assert line["client_id"] == "rp-1"
    assert line["client_secret"] == REDACTED
    assert line["form"] == {"auth_req_id": REDACTED, "grant_type": "ciba", "scope": ["openid"]}
    assert line["Authorization"] == REDACTED
    assert line["attempts"] == 3
    assert CLIENT_SECRET not in json_logs.text and AUTH_REQ_ID not in json_logs.text


@pytest.mark.parametrize(
    "message",
    [
        f"form: client_secret={CLIENT_SECRET}&grant_type=client_credentials",
        f"body {{'auth_req_id': '{AUTH_REQ_ID}', 'scope': 'openid'}}",
        f'json {{"auth_req_id": "{AUTH_REQ_ID}"}}',
        f"verifying {JWT} for rp-1",
        f"client_assertion={JWT}",
        f"header Authorization: Bearer {CLIENT_SECRET}",
        f"refresh_token={CLIENT_SECRET}; access_token={AUTH_REQ_ID}",
        f"id_token: {JWT}",
        f"enrolment_code={CLIENT_SECRET} code={AUTH_REQ_ID}",
        f"connecting to postgresql://backchannel:{CLIENT_SECRET}@db.internal/backchannel",
    ],
)
def test_secrets_in_messages_never_reach_the_log(json_logs: Captured, message: str) -> None:
    logging.getLogger("backchannel.test").warning(message)
    [line] = json_logs.lines()
    for secret in (CLIENT_SECRET, AUTH_REQ_ID, JWT, JWT.split(".")[2]):
        assert secret not in json_logs.text
    assert REDACTED in line["message"]


def test_secrets_in_a_traceback_are_masked(json_logs: Captured) -> None:
    try:
        raise ValueError(f"bad client_secret={CLIENT_SECRET} in {JWT}")
    except ValueError:
        logging.getLogger("backchannel.test").exception("request failed")
    [line] = json_logs.lines()
    assert "ValueError" in line["exc_info"]
    assert CLIENT_SECRET not in json_logs.text and JWT not in json_logs.text


@pytest.mark.parametrize(
    "text",
    [
        "outbox message 12 to fcm.googleapis.com failed: HTTP 400",
        "backchannel.oauth.polling: 3 polls, interval 5 s",
        "listener handler failed on bc_decision",
        "jwks_uri https://rp.example.com/.well-known/jwks.json refused",
        "token endpoint answered invalid_grant",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact_text(text) == text


def test_the_text_format_masks_secrets_too() -> None:
    record = logging.LogRecord(
        "backchannel.test", logging.INFO, __file__, 1, "auth_req_id=%s", (AUTH_REQ_ID,), None
    )
    text = RedactingFormatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert text == f"INFO backchannel.test: auth_req_id={REDACTED}"


def test_configure_logging_installs_one_root_handler_of_the_chosen_format() -> None:
    root = logging.getLogger()
    previous = root.level
    stream = io.StringIO()
    handler = configure_logging("WARNING", "json", stream)
    try:
        logging.getLogger("backchannel.test").info("not at INFO")
        logging.getLogger("backchannel.test").warning("client_secret=%s", CLIENT_SECRET)
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == f"client_secret={REDACTED}"


async def test_a_log_line_written_while_serving_a_request_carries_its_request_id(
    json_logs: Captured,
) -> None:
    async def crash(request: Request) -> Response:
        logging.getLogger("backchannel.test").info("about to fail")
        raise RuntimeError(f"client_secret={CLIENT_SECRET}")

    app = ServiceApp(
        Metrics(process=False),
        routes=[Route("/crash", crash)],
        exception_handlers={OAuthError: render_oauth_error, Exception: render_unexpected_error},
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        response = await http.get("/crash")
    request_id = response.headers["x-request-id"]
    ours = [line for line in json_logs.lines() if line["logger"].startswith("backchannel")]
    assert [line["message"] for line in ours] == ["about to fail", "unhandled error on GET /crash"]
    assert {line.get("request_id") for line in ours} == {request_id}
    assert "RuntimeError" in ours[1]["exc_info"]
    assert CLIENT_SECRET not in json_logs.text


async def test_a_whole_ciba_flow_logs_no_credential(
    json_logs: Captured,
    http: httpx.AsyncClient,
    rp: RegisteredClient,
    alice: User,
    db: asyncpg.Connection,
) -> None:
    auth_req_id = await start_auth_req_id(http, rp.basic_auth())
    assert (await poll(http, rp.basic_auth(), auth_req_id)).status_code == 400
    await decide(db, auth_req_id, "approved")
    await rewind(db, auth_req_id, 10)
    tokens = await poll(http, rp.basic_auth(), auth_req_id)
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert rp.secret is not None
    for secret in (
        auth_req_id,
        rp.secret,
        body["access_token"],
        body["id_token"],
        body["refresh_token"],
    ):
        assert secret not in json_logs.text
    json_logs.lines()  # every line parses


def test_a_log_call_with_mismatched_arguments_does_not_print_them() -> None:
    record = logging.LogRecord(
        "backchannel.test", logging.INFO, __file__, 1, "%s and %s", (CLIENT_SECRET,), None
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "%s and %s (log arguments did not match the format)"
    text = RedactingFormatter("%(message)s").format(record)
    assert text == "%s and %s (log arguments did not match the format)"
