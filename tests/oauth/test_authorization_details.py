"""RFC 9396 authorization_details: per-type schemas, the client's allowed types, limits."""

from __future__ import annotations

import copy
import json
from typing import Any

import asyncpg
import pytest

from backchannel.db.authorization_types import select_authorization_schemas
from backchannel.db.clients import Client
from backchannel.errors import InvalidAuthorizationDetails
from backchannel.oauth.authorization_details import (
    parse_authorization_details,
    register_authorization_type,
    remove_authorization_type,
)
from tests.support import factories
from tests.support.payments import PAYMENT

LOYALTY_SCHEMA = {
    "type": "object",
    "required": ["type", "points"],
    "properties": {"type": {"const": "loyalty"}, "points": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}


def client(*types: str) -> Client:
    return Client(
        client_id="c",
        name="Acme",
        secret_hash=None,
        token_endpoint_auth_method="client_secret_basic",
        jwks=None,
        jwks_uri=None,
        grant_types=(),
        scopes=("openid",),
        backchannel_token_delivery_mode="poll",
        backchannel_client_notification_endpoint=None,
        backchannel_authentication_request_signing_alg=None,
        require_signed_request=False,
        backchannel_user_code_parameter=False,
        id_token_signed_response_alg="ES256",
        access_token_ttl=None,
        refresh_token_ttl=None,
        max_requested_expiry=None,
        authorization_details_types=types,
    )


def parse(value: object, *types: str, registered: dict[str, Any] | None = None) -> Any:
    return parse_authorization_details(value, client(*types), registered or {})


def test_a_payment_is_accepted_from_form_json_or_a_signed_requests_array() -> None:
    assert parse(json.dumps([PAYMENT]), "payment_initiation") == (PAYMENT,)
    assert parse([PAYMENT], "payment_initiation") == (PAYMENT,)


def with_change(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(PAYMENT)
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return changed


@pytest.mark.parametrize(
    ("detail", "reason"),
    [
        (with_change(("instructedAmount", "amount"), "80,00"), "instructedAmount"),
        (with_change(("instructedAmount", "amount"), 80), "instructedAmount"),
        (with_change(("instructedAmount", "currency"), "euro"), "currency"),
        (with_change(("creditorName",), None), "creditorName"),
        (with_change(("creditorAccount", "iban"), "DE89370400440532013001"), "check digits"),
        (with_change(("creditorName",), "Acme\u202eeeffoC"), "cannot be displayed"),
        (with_change(("remittanceInformationUnstructured",), "a\nb"), "cannot be displayed"),
        (with_change(("surprise",), "field"), "Additional properties"),
    ],
)
def test_a_payment_that_does_not_fit_its_schema_is_refused(
    detail: dict[str, Any], reason: str
) -> None:
    with pytest.raises(InvalidAuthorizationDetails, match=reason):
        parse([detail], "payment_initiation")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not json", "not valid JSON"),
        ("{}", "non-empty JSON array"),
        ("[]", "non-empty JSON array"),
        ('[{"amount": 1}]', "with a type"),
        (json.dumps([PAYMENT] * 9), "over 8 entries"),
        ("[" * 50 + "]" * 50, "nested"),
        (json.dumps([{**PAYMENT, "creditorName": "x" * 9000}]), "over 8192 bytes"),
    ],
)
def test_malformed_or_oversized_details_are_refused(value: str, reason: str) -> None:
    with pytest.raises(InvalidAuthorizationDetails, match=reason):
        parse(value, "payment_initiation")


def test_a_type_the_client_was_not_registered_for_is_refused() -> None:
    with pytest.raises(InvalidAuthorizationDetails, match="not allowed for this client"):
        parse([PAYMENT], "account_information")


def test_an_unknown_type_is_refused_even_when_the_client_lists_it() -> None:
    with pytest.raises(InvalidAuthorizationDetails, match="unknown type"):
        parse([{"type": "loyalty", "points": 5}], "loyalty")


async def test_an_operator_registered_type_is_validated_by_its_own_schema(
    db: asyncpg.Connection,
) -> None:
    assert await register_authorization_type(db, "loyalty", LOYALTY_SCHEMA, actor="test")
    registered = await select_authorization_schemas(db)
    assert parse([{"type": "loyalty", "points": 5}], "loyalty", registered=registered)
    with pytest.raises(InvalidAuthorizationDetails, match="points"):
        parse([{"type": "loyalty", "points": 0}], "loyalty", registered=registered)
    assert await remove_authorization_type(db, "loyalty", actor="test")
    events = [r["event"] for r in await db.fetch("SELECT event FROM audit_events ORDER BY id")]
    assert events == ["authorization_type_registered", "authorization_type_removed"]


async def test_a_schema_that_is_not_json_schema_or_a_built_in_name_is_refused(
    db: asyncpg.Connection,
) -> None:
    with pytest.raises(ValueError, match="JSON Schema"):
        await register_authorization_type(db, "broken", {"type": "no-such-type"})
    with pytest.raises(ValueError, match="built in"):
        await register_authorization_type(db, "payment_initiation", LOYALTY_SCHEMA)


async def test_a_clients_allowed_types_are_stored_with_it(db: asyncpg.Connection) -> None:
    stored, _ = await factories.create_client(
        db, authorization_details_types=("payment_initiation",)
    )
    assert stored.authorization_details_types == ("payment_initiation",)
