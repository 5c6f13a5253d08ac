"""Generated requests against the real server never break the contract in openapi.json.

schemathesis reads the document (the one /openapi.json serves) and sends what
it generates from it (explicit examples, boundary and negative cases, random
data, then stateful sequences that follow the document's links:
``/bc-authorize`` → ``/token`` → ``/userinfo``, ``/introspect``,
``/revoke``, refresh) to the real app on hypercorn over loopback, backed by
PostgreSQL. Each answer is checked:

- no 5xx other than a documented ``503 temporarily_unavailable`` with
  ``Retry-After``;
- the status code, content type, headers and body are the ones the document
  gives for that operation;
- no log record with a traceback, and none at ERROR or above.

``BACKCHANNEL_FUZZ_EXAMPLES`` sets the examples per operation (default
:data:`DEFAULT_EXAMPLES`) and ``BACKCHANNEL_FUZZ_STEPS`` the stateful
scenarios; the deep run in docs/testing.md raises both. Hypothesis is
derandomized (the same data every run) unless ``BACKCHANNEL_FUZZ_RANDOM=1``.
"""

from __future__ import annotations

import base64
import itertools
import logging
import os
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import Case, CheckContext, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from backchannel.endpoints.openapi import openapi_document
from tests.contract.fuzz_server import FuzzServer
from tests.contract.generation import (
    AS_GENERATED,
    REALISTIC_FORMS,
    dpop_header,
    made,
    mostly,
    realistic_body,
    signed_device_body,
)
from tests.support import postgres

DEFAULT_EXAMPLES = 100
DEFAULT_STEPS = 60
MIN_REQUESTS = 2000
MAX_BATCHES = 50
EXAMPLES = int(os.environ.get("BACKCHANNEL_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
STEPS = int(os.environ.get("BACKCHANNEL_FUZZ_STEPS", DEFAULT_STEPS))
# Fresh random data instead of the same data every run (for deep runs).
RANDOM = os.environ.get("BACKCHANNEL_FUZZ_RANDOM") == "1"

CLIENT_AUTH_PATHS = frozenset(
    {"/bc-authorize", "/token", "/revoke", "/introspect", "/receipts", "/admin/enrolments"}
)
FORM_AUTH_FIELDS = frozenset({"client_secret", "client_assertion", "client_assertion_type"})

# Requests sent during this module, by the generated tests and by schemathesis' own probes.
sent: list[str] = []
# The operations and scenarios that ran, so that the count is checked only after a full run.
ran: set[str] = set()

# Under pytest-xdist the module must run on one worker (scripts/test: --dist loadfile), so
# that one server answers every test and the request count sees them all.
pytestmark = pytest.mark.timeout(0 if EXAMPLES > DEFAULT_EXAMPLES else 900)


def hypothesis_settings(max_examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        derandomize=not RANDOM,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        # Shrinking a failure re-sends it many times: report the first one as it came.
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        print_blob=False,
    )


@pytest.fixture(scope="module")
def fuzz_server(test_postgres: postgres.TestPostgres) -> Iterator[FuzzServer]:
    server = FuzzServer(test_postgres)
    server.start()
    _running.append(server)
    try:
        yield server
    finally:
        _running.remove(server)
        server.stop()


# Device bodies are compact JWS, sent as they are; receipts are compact JWS, read as text.
schemathesis.serializer.alias("application/jose", "text/plain")


# schemathesis counts application/jwt in the JSON family and reads it with its JSON
# deserializer, which comes first: replace that one with one that knows a JWT is text.
@schemathesis.deserializer("application/json")
def _json_or_compact_jws(ctx: schemathesis.DeserializationContext, response: Response) -> Any:
    if response.headers.get("content-type", [""])[0].startswith("application/jwt"):
        return response.content.decode("ascii")
    return response.json()


# The document as shipped (test_openapi.py checks that /openapi.json serves the same).
CONFIG = schemathesis.Config.from_dict(
    # A body over the size limit is refused with 413 whatever else is wrong with it.
    {"checks": {"negative_data_rejection": {"expected-statuses": ["4xx"]}}}
)
schema = schemathesis.openapi.from_dict(openapi_document(), config=CONFIG)
# The server of the running module, for the hooks below.
_running: list[FuzzServer] = []


def _server() -> FuzzServer | None:
    return _running[0] if _running else None


@schema.hook("flatmap_case")
def _realistic(context: schemathesis.HookContext, case: Case) -> Any:
    """Three positive cases in four get a realistic body, and a token request a DPoP proof
    (or none) two in three; negative ones stay as generated."""
    meta = case.meta
    if meta is not None and meta.generation.mode.is_negative:
        return st.just(case)
    path = case.operation.path
    if path.startswith("/device/"):
        body = signed_device_body(_server, path)
    elif path in REALISTIC_FORMS:
        body = realistic_body(path, case.body)
    else:
        return st.just(case)
    body = mostly(body, st.none())
    dpop = dpop_header(_server) if path == "/token" else st.just(AS_GENERATED)
    return st.tuples(body, dpop).map(lambda drawn: _with(case, *drawn))


def _with(case: Case, body: Any, dpop: str | None) -> Case:
    # Before the server runs (explicit examples are made while collecting) nothing changes.
    if not _running:
        return case
    if body is not None:
        case.body = body
    if dpop != AS_GENERATED:
        case.headers.pop("DPoP", None)  # case-insensitive
        if dpop is not None:
            case.headers["DPoP"] = dpop
    return case


@schema.hook("after_call")
def _after(context: schemathesis.HookContext, case: Case, response: Response) -> None:
    sent.append(f"{case.operation.label} {response.status_code}")
    if case.operation.path == "/bc-authorize" and response.status_code == 200:
        _running[0].decide(response.json()["auth_req_id"])


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


# Authorization headers as broken clients and attackers send them (schemathesis generates
# none for HTTP Basic and Bearer schemes once credentials are set).
HOSTILE_BASIC = itertools.cycle(
    [
        "Basic \xe9",
        "Basic " + _b64(b"no-colon"),
        "Basic " + _b64(b":secret"),
        "Basic " + _b64(b"fuzz-client:"),
        "Basic " + _b64(b"%00:x"),
        "Basic " + _b64(b"%FF:x"),
        "Basic " + _b64(b"\xff:x"),
        "Basic " + _b64("fuzz-client:é".encode()),
        "Basic",
        "Basic ====",
        "Basic " + "A" * 6000,
        "Bearer abc",
        "Digest username=x",
    ]
)
HOSTILE_BEARER = itertools.cycle(
    ["Bearer \xe9", "Bearer a b", "Bearer", "Bearer " + "A" * 6000, "Basic eDp5", "bearer ="]
)
_calls = itertools.count()


def send(case: Case, server: FuzzServer, session: requests.Session, **kwargs: Any) -> Response:
    """Authenticate ``case`` (:func:`authenticate`), make a deferred body, and send it."""
    authenticate(case, server)
    case.body = made(case.body)
    return case.call(base_url=server.url, session=session, timeout=40, **kwargs)


def authenticate(case: Case, server: FuzzServer) -> None:
    """The seeded client's Basic credentials, unless the body authenticates the client itself;
    one call in eight instead gets a broken Authorization header."""
    hostile = next(_calls) % 8 == 0
    headers = dict(case.headers or {})
    if case.operation.path in CLIENT_AUTH_PATHS:
        body = case.body if isinstance(case.body, dict) else {}
        if hostile:
            headers["Authorization"] = next(HOSTILE_BASIC)
            if isinstance(case.body, dict) and FORM_AUTH_FIELDS & set(case.body):
                # The header must be read, not refused as a second method.
                case.body = {k: v for k, v in case.body.items() if k not in FORM_AUTH_FIELDS}
        elif not FORM_AUTH_FIELDS & set(body):
            headers["Authorization"] = server.basic_auth()
    elif case.operation.path == "/userinfo" and hostile:
        headers["Authorization"] = next(HOSTILE_BEARER)
    case.headers = headers


def documented_server_errors_only(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """No 5xx but a documented 503 ``temporarily_unavailable`` with ``Retry-After``."""
    if response.status_code < 500:
        return None
    documented = "503" in case.operation.definition.raw.get("responses", {})
    body = _json(response)
    assert (
        response.status_code == 503
        and documented
        and body.get("error") == "temporarily_unavailable"
        and response.headers.get("retry-after")
    ), f"{case.operation.label} answered {response.status_code}: {response.text[:300]}"
    return None


def _json(response: Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


CHECKS: dict[str, Any] = {
    "additional_checks": [documented_server_errors_only],
    # Schema-valid is not the same as acceptable: an unknown login hint is a valid string.
    "excluded_checks": [not_a_server_error, positive_data_acceptance],
}


def assert_log_is_clean(server: FuzzServer) -> None:
    bad = [r for r in server.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, "\n".join(
        f"{r.levelname} {r.name}: {r.getMessage()}" + (f"\n{_traceback(r)}" if r.exc_info else "")
        for r in bad
    )


def _traceback(record: logging.LogRecord) -> str:
    return logging.Formatter().formatException(record.exc_info) if record.exc_info else ""


def generated_requests_get_documented_answers(
    case: Case, fuzz_server: FuzzServer, http_session: requests.Session
) -> None:
    ran.add(case.operation.label)
    response = send(case, fuzz_server, http_session)
    case.validate_response(response, **CHECKS)
    assert_log_is_clean(fuzz_server)


def _test_name(label: str) -> str:
    return "test_generated_requests_get_documented_answers_" + re.sub(r"\W+", "_", label).strip("_")


def _operation_test(method: str, path: str) -> Any:
    def test(case: Case, fuzz_server: FuzzServer, http_session: requests.Session) -> None:
        generated_requests_get_documented_answers(case, fuzz_server, http_session)

    test.__name__ = test.__qualname__ = _test_name(f"{method.upper()} {path}")
    only_this = schema.include(method=method, path=path)
    return only_this.parametrize()(hypothesis_settings(EXAMPLES)(test))


# One test function per operation: schemathesis gives all the cases of one parametrized
# function the same node id until they run, and pytest-xdist needs distinct ones.
for _operation in (result.ok() for result in schema.get_all_operations()):
    _test = _operation_test(_operation.method, _operation.path)
    globals()[_test.__name__] = _test


def test_stateful_sequences_get_documented_answers(
    fuzz_server: FuzzServer, http_session: requests.Session
) -> None:
    machine = schema.as_state_machine()

    scenarios = 0

    class Machine(machine):  # type: ignore[misc, valid-type]
        def call(self, case: Case, **kwargs: Any) -> Response:
            return send(case, fuzz_server, http_session, **kwargs)

        def validate_response(self, response: Response, case: Case, **kwargs: Any) -> None:
            case.validate_response(response, **CHECKS, **kwargs)
            assert_log_is_clean(fuzz_server)

        def teardown(self) -> None:
            nonlocal scenarios
            scenarios += 1
            super().teardown()

    # Hypothesis replays scenarios; the server, whose state has moved on, may then offer other
    # steps (FlakyStrategyDefinition). That is not a finding: carry on with the scenarios left.
    # A failure that does not repeat is a FlakyFailure instead, and fails the test.
    for _ in range(MAX_BATCHES):
        settings = hypothesis.settings(
            hypothesis_settings(STEPS - scenarios), stateful_step_count=8
        )
        try:
            Machine.run(settings=settings)
            break
        except FlakyStrategyDefinition:
            if scenarios >= STEPS:
                break
    else:
        pytest.fail(f"only {scenarios} of {STEPS} scenarios ran before replays kept diverging")
    ran.add("stateful")


def test_every_run_sends_enough_requests() -> None:
    operations = {result.ok().label for result in schema.get_all_operations()}
    if not ran >= {*operations, "stateful"} or EXAMPLES < DEFAULT_EXAMPLES:
        # CI always runs it in full: there, a partial run means the module was split.
        assert os.environ.get("CI") != "true", f"only {sorted(ran)} ran in this process"
        pytest.skip("the fuzzing did not run in full")
    answers = Counter(sent)
    print(f"\n{len(sent)} requests:", ", ".join(f"{a} ×{n}" for a, n in sorted(answers.items())))
    assert len(sent) >= MIN_REQUESTS, f"only {len(sent)} requests were sent"


@pytest.fixture(scope="module")
def http_session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session
