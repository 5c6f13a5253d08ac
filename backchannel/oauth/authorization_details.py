"""Rich authorization requests (RFC 9396): ``authorization_details`` at /bc-authorize.

A request may carry an array of objects, each with a ``type``, describing what
exactly the user is asked to approve (a payment: amount, payee, account,
reference). Each is validated against the JSON Schema of its type — the
built-in ``payment_initiation`` or a type the operator registered — and its
type must be one the client was registered for (``authorization_details_types``).
Every string must be displayable as it is, since the phone shows it and the
user approves what they read. Anything else is ``invalid_authorization_details``
(RFC 9396 §5) and nothing is stored.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from typing import Any

import asyncpg
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from backchannel.db.audit import insert_audit_event
from backchannel.db.authorization_types import delete_authorization_type, upsert_authorization_type
from backchannel.db.clients import Client
from backchannel.errors import InvalidAuthorizationDetails
from backchannel.oauth.binding_message import undisplayable_character
from backchannel.untrusted_json import UntrustedJSON, parse_untrusted_json

MAX_BYTES = 8192
MAX_ENTRIES = 8
MAX_DEPTH = 6
BUILT_IN_TYPES = ("payment_initiation",)
_TYPE_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")


@cache
def built_in_schema(type_name: str) -> dict[str, Any]:
    resource = files("backchannel.oauth") / "authorization_types" / f"{type_name}.json"
    schema: dict[str, Any] = json.loads(resource.read_text("utf-8"))
    return schema


def check_schema(schema: Mapping[str, Any]) -> None:
    """Refuse a schema an operator registers that is not a valid JSON Schema (2020-12)."""
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None


async def register_authorization_type(
    conn: asyncpg.Connection,
    type_name: str,
    schema: Mapping[str, Any],
    *,
    description: str | None = None,
    actor: str = "operator",
) -> bool:
    """Register (or replace) a type with its JSON Schema; audited
    ``authorization_type_registered``. True if it is new."""
    if type_name in BUILT_IN_TYPES:
        raise ValueError(f"{type_name} is built in")
    if not _TYPE_NAME.match(type_name):
        raise ValueError("a type name is 1 to 128 of A-Z a-z 0-9 _ . : / -")
    check_schema(schema)
    async with conn.transaction():
        new = await upsert_authorization_type(conn, type_name, dict(schema), description)
        await insert_audit_event(
            conn,
            "authorization_type_registered",
            detail={"actor": actor, "type": type_name, "replaced": not new},
        )
    return new


async def remove_authorization_type(
    conn: asyncpg.Connection, type_name: str, *, actor: str = "operator"
) -> bool:
    """Unregister a type (requests already stored keep their details); audited."""
    async with conn.transaction():
        removed = await delete_authorization_type(conn, type_name)
        if removed:
            await insert_audit_event(
                conn, "authorization_type_removed", detail={"actor": actor, "type": type_name}
            )
    return removed


def parse_authorization_details(
    value: object, client: Client, registered: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], ...]:
    """The validated details of a request; ``value`` is the form's JSON text or, from a
    signed request, the decoded array. ``registered`` maps the operator's types to
    their schemas (the built-in types need no entry)."""
    details = _array(value)
    checked = []
    for index, entry in enumerate(details):
        where = f"authorization_details[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
            raise InvalidAuthorizationDetails(f"{where} must be an object with a type")
        type_name = entry["type"]
        if type_name not in client.authorization_details_types:
            raise InvalidAuthorizationDetails(
                f"{where}: type {type_name[:64]!r} is not allowed for this client"
            )
        schema = registered.get(type_name)
        if schema is None and type_name in BUILT_IN_TYPES:
            schema = built_in_schema(type_name)
        if schema is None:
            raise InvalidAuthorizationDetails(f"{where}: unknown type {type_name[:64]!r}")
        _validate(entry, schema, where)
        _check_text(entry, where)
        if type_name == "payment_initiation":
            _check_iban(entry, where)
        checked.append(entry)
    return tuple(checked)


def _array(value: object) -> Sequence[Any]:
    if isinstance(value, str):
        if len(value.encode("utf-8")) > MAX_BYTES:
            raise InvalidAuthorizationDetails(f"authorization_details is over {MAX_BYTES} bytes")
        try:
            value = parse_untrusted_json(value, max_bytes=MAX_BYTES, max_depth=MAX_DEPTH)
        except UntrustedJSON as exc:
            raise InvalidAuthorizationDetails(f"authorization_details: {exc}") from None
    if not isinstance(value, list) or not value:
        raise InvalidAuthorizationDetails("authorization_details must be a non-empty JSON array")
    if len(value) > MAX_ENTRIES:
        raise InvalidAuthorizationDetails(f"authorization_details has over {MAX_ENTRIES} entries")
    if len(json.dumps(value).encode("utf-8")) > MAX_BYTES:
        raise InvalidAuthorizationDetails(f"authorization_details is over {MAX_BYTES} bytes")
    return value


def _validate(entry: dict[str, Any], schema: Mapping[str, Any], where: str) -> None:
    error = next(iter(Draft202012Validator(dict(schema)).iter_errors(entry)), None)
    if error is not None:
        path = "".join(f"[{p!r}]" if isinstance(p, int) else f".{p}" for p in error.path)
        raise InvalidAuthorizationDetails(f"{where}{path}: {error.message[:200]}")


def _check_text(value: Any, where: str) -> None:
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            char = undisplayable_character(item)
            if char is not None:
                raise InvalidAuthorizationDetails(
                    f"{where} contains a character that cannot be displayed (U+{ord(char):04X})"
                )
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)


def _check_iban(entry: Mapping[str, Any], where: str) -> None:
    """ISO 13616: moving the first four characters to the end, the number mod 97 is 1."""
    iban = entry.get("creditorAccount", {}).get("iban")
    if iban is None:
        return
    digits = "".join(str(int(c, 36)) for c in iban[4:] + iban[:4])
    if int(digits) % 97 != 1:
        raise InvalidAuthorizationDetails(f"{where}.creditorAccount.iban: the check digits fail")
