"""``backchannel audit [list] | verify | seal | receipt``: the audit trail for operators.

``audit`` (or ``audit list``) shows events, newest first; ``verify`` walks the
hash chain and exits 1 if it is broken; ``seal`` seals committed rows now
(the server does it every second); ``receipt`` shows a request's approval
receipt; ``verify-receipt`` checks a receipt file offline, with the server's
JWKS only, and exits 1 if it does not verify. See docs/audit.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from joserfc import jwk

from backchannel.audit.chain import ChainReport, format_timestamp, seal_pending, verify_chain
from backchannel.authenticator.receipts import (
    InvalidReceipt,
    check_device_decision,
    check_user_verification,
    receipt_claims,
    sign_receipt,
    verify_receipt,
)
from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, fields, table
from backchannel.db.audit_chain import (
    ListedEvent,
    StoredReceipt,
    select_events_filtered,
    select_receipt,
)
from backchannel.db.signing_keys import select_published_keys
from backchannel.db.users import select_user_by_subject
from backchannel.key_wrapping import KeyWrapper
from backchannel.oauth.secrets import hash_secret

DEFAULT_LIMIT = 100
MAX_LIMIT = 100_000
# How long `audit seal` waits for a running sealer to let go of the lock.
SEAL_WAIT = 5.0
_REF = re.compile(r"[0-9a-f]{64}")
_ANCHOR = re.compile(r"(\d+):([0-9a-fA-F]{64})")


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``audit`` command group; without a subcommand it lists events."""
    group = commands.add_parser(
        "audit",
        parents=[common],
        help="list audit events, verify the audit chain, show approval receipts",
        description="Without a subcommand: list audit events, newest first (as `audit list`).",
    )
    _add_filters(group)
    group.set_defaults(run=database_command(list_events))
    sub = group.add_subparsers(dest="audit_command", required=False, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[common], help="list audit events, newest first")
    _add_filters(listing)
    listing.set_defaults(run=database_command(list_events))

    verify = sub.add_parser(
        "verify",
        parents=[common],
        help="recompute the audit hash chain; exit 1 if it is broken",
    )
    verify.add_argument(
        "--anchor",
        action="append",
        default=[],
        metavar="SEQ:HASH",
        help="a chain head recorded earlier (printed by verify); may be repeated",
    )
    verify.set_defaults(run=database_command(verify_audit_chain))

    seal = sub.add_parser("seal", parents=[common], help="seal committed audit events now")
    seal.set_defaults(run=database_command(seal_audit_events))

    receipt = sub.add_parser(
        "receipt",
        parents=[common],
        help="show the approval receipt of a request",
        description="Name the request by auth_req_id, by ref (64 hex digits) or by its "
        "auth_request_id number as `audit list` shows it.",
    )
    receipt.add_argument("request", metavar="AUTH_REQUEST_ID_OR_REF")
    receipt.set_defaults(run=database_command(show_receipt))

    offline = sub.add_parser(
        "verify-receipt",
        parents=[common],
        help="verify an approval receipt offline; exit 1 if it does not verify",
        description="Check a receipt (as POST /receipts returns it) with the server's JWK "
        "Set alone, no database: the server's signature, the device's signed decision over "
        "what was shown and, for an approval with user verification, the WebAuthn "
        "assertion over exactly this transaction.",
    )
    offline.add_argument("receipt", metavar="RECEIPT_FILE", help="the receipt JWS; - for stdin")
    offline.add_argument(
        "--jwks", required=True, metavar="JWKS_FILE", help="the server's JWK Set (GET /jwks)"
    )
    offline.add_argument("--issuer", help="the issuer the receipt must come from")
    offline.add_argument("--auth-req-id", help="the auth_req_id the receipt must be about")
    offline.set_defaults(run=verify_receipt_file)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", metavar="SUBJECT", help="only this user's events")
    parser.add_argument("--client", metavar="CLIENT_ID", help="only this client's events")
    parser.add_argument("--event", metavar="NAME", help="only events of this type")
    parser.add_argument("--since", metavar="ISO", help="at or after this time (UTC if no zone)")
    parser.add_argument("--until", metavar="ISO", help="before this time (UTC if no zone)")
    parser.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        metavar="N",
        help=f"at most N events (default {DEFAULT_LIMIT})",
    )


# --- list ------------------------------------------------------------------------------------


async def list_events(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    if not 1 <= args.limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}")
    since, until = _instant(args.since, "--since"), _instant(args.until, "--until")
    user_id = None
    if args.user is not None:
        user = await select_user_by_subject(conn, args.user)
        if user is None:
            raise CommandError(f"no user {args.user!r}", exit_code=2)
        user_id = user.user_id
    events = await select_events_filtered(
        conn,
        user_id=user_id,
        client_id=args.client,
        event=args.event,
        since=since,
        until=until,
        limit=args.limit,
    )
    if ctx.out.json:
        out = ctx.out.stdout or sys.stdout
        for listed in events:
            print(json.dumps(event_json(listed), ensure_ascii=False), file=out)
        return
    rows = [
        [
            str(e.row.id),
            "-" if e.row.seq is None else str(e.row.seq),
            format_timestamp(e.row.at),
            e.row.event,
            e.row.client_id or "-",
            e.subject or ("-" if e.row.user_id is None else f"#{e.row.user_id}"),
            "-" if e.row.auth_request_id is None else str(e.row.auth_request_id),
            e.row.device_id or "-",
            json.dumps(e.row.detail, sort_keys=True, ensure_ascii=False),
        ]
        for e in events
    ]
    headers = ["ID", "SEQ", "AT", "EVENT", "CLIENT", "USER", "REQUEST", "DEVICE", "DETAIL"]
    ctx.out.result(None, table(headers, rows))


def event_json(listed: ListedEvent) -> dict[str, Any]:
    row = listed.row
    return {
        "id": row.id,
        "seq": row.seq,
        "at": format_timestamp(row.at),
        "event": row.event,
        "client_id": row.client_id,
        "user_id": row.user_id,
        "subject": listed.subject,
        "auth_request_id": row.auth_request_id,
        "device_id": row.device_id,
        "detail": row.detail,
        "hash": row.hash.hex() if row.hash is not None else None,
    }


def _instant(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(f"{option} must be an ISO 8601 date or time, not {value!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


# --- verify and seal -------------------------------------------------------------------------


async def verify_audit_chain(ctx: Context, conn: asyncpg.Connection) -> None:
    anchors: dict[int, bytes] = {}
    for value in ctx.args.anchor:
        match = _ANCHOR.fullmatch(value)
        if match is None:
            raise UsageError(f"--anchor must be SEQ:HASH (64 hex digits), not {value!r}")
        anchors[int(match.group(1))] = bytes.fromhex(match.group(2))
    report = await verify_chain(conn, anchors=anchors)
    ctx.out.result(report.to_json(), lambda: _report_text(report))
    if not report.intact:
        raise CommandError(f"the audit chain is broken ({report.problem_count} problems)")


def _report_text(report: ChainReport) -> str:
    if report.intact:
        lines = [f"audit chain intact: {report.checked} sealed events"]
    else:
        lines = [f"audit chain BROKEN: {report.problem_count} problems in {report.checked} events"]
        lines += [f"  {p.kind}: {p.message}" for p in report.problems]
        if report.problem_count > len(report.problems):
            lines.append(f"  … and {report.problem_count - len(report.problems)} more")
    lines.append(f"head: {report.last_seq}:{report.last_hash.hex()} (record it to anchor later)")
    if report.unsealed:
        assert report.oldest_unsealed_at is not None
        oldest = format_timestamp(report.oldest_unsealed_at)
        lines.append(f"unsealed: {report.unsealed} events, the oldest at {oldest}")
    else:
        lines.append("unsealed: none")
    return "\n".join(lines)


async def seal_audit_events(ctx: Context, conn: asyncpg.Connection) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SEAL_WAIT
    result = await seal_pending(conn)
    while result.busy and loop.time() < deadline:
        await asyncio.sleep(0.1)
        result = await seal_pending(conn)
    if result.busy:
        raise CommandError("another sealer holds the lock; try again")
    ctx.out.result(
        {"sealed": result.sealed, "head_seq": result.head_seq},
        f"sealed {result.sealed} events; the chain ends at seq {result.head_seq}",
    )


# --- receipt ---------------------------------------------------------------------------------


async def show_receipt(ctx: Context, conn: asyncpg.Connection) -> None:
    name: str = ctx.args.request
    if name.isdigit():
        stored = await select_receipt(conn, auth_request_id=int(name))
    elif _REF.fullmatch(name):
        stored = await select_receipt(conn, id_hash=bytes.fromhex(name))
    else:
        stored = await select_receipt(conn, id_hash=hash_secret(name))
    if stored is None:
        raise CommandError(f"no approval receipt for {name!r}")
    claims = receipt_claims(stored, issuer=ctx.settings.issuer)
    problem = _device_problem(stored, claims)
    signed = await _signed(conn, claims, KeyWrapper.from_settings(ctx.settings))
    data = {
        "auth_request_id": stored.auth_request_id,
        "claims": claims,
        "device_signature_valid": problem is None,
        "device_signature_problem": problem,
        "user_verified": stored.user_verification is not None and problem is None,
        "receipt": signed,
    }
    ctx.out.result(data, lambda: _receipt_text(stored, claims, problem, signed))


def _device_problem(stored: StoredReceipt, claims: dict[str, Any]) -> str | None:
    try:
        payload = check_device_decision(
            stored.device_jws,
            jwk.ECKey.import_key(stored.device_public_jwk),
            device_id=stored.device_id,
            ref=claims["ref"],
            decision=stored.decision,
            digest=claims["shown"]["digest"],
        )
        if stored.user_verification is not None:
            check_user_verification(
                stored.user_verification,
                issuer=claims["iss"],
                ref=claims["ref"],
                client_id=stored.client_id,
                shown=stored.shown,
                decision=stored.decision,
                device_payload=payload,
            )
    except InvalidReceipt as exc:
        return str(exc)
    return None


async def _signed(
    conn: asyncpg.Connection, claims: dict[str, Any], wrapper: KeyWrapper
) -> str | None:
    """The receipt signed with the active ES256 key, as /receipts serves it (None if none)."""
    for stored in await select_published_keys(conn):
        if stored.alg == "ES256" and stored.status == "active":
            return sign_receipt(claims, jwk.import_key(wrapper.unwrap_jwk(stored.private_jwk)))
    return None


def _receipt_text(
    stored: StoredReceipt, claims: dict[str, Any], problem: str | None, signed: str | None
) -> str:
    shown = claims["shown"]
    return fields(
        [
            ("request", f"{stored.auth_request_id} (ref {claims['ref']})"),
            ("client", stored.client_id),
            ("user", stored.subject),
            ("shown client", shown["client_name"]),
            ("binding message", shown["binding_message"]),
            ("scope", shown["scope"]),
            ("device", f"{stored.device_id} ({stored.device_name})"),
            ("device key", claims["device"]["jkt"]),
            ("decision", stored.decision),
            ("decided at", format_timestamp(stored.decided_at)),
            ("device signature", "valid" if problem is None else f"INVALID: {problem}"),
            ("user verified", _uv_text(stored.user_verification, problem)),
            ("receipt", signed),
        ]
    )


def _uv_text(uv: dict[str, Any] | None, problem: str | None) -> str:
    """The fingerprint, face or PIN check of a receipt, for people."""
    if uv is None:
        return "no (the device key alone)"
    credential = uv.get("credential", {})
    state = "yes" if problem is None else "INVALID"
    key, aaguid = credential.get("id"), credential.get("aaguid")
    return f"{state} (WebAuthn credential {key}, AAGUID {aaguid})"


# --- verify-receipt (offline) ----------------------------------------------------------------


def verify_receipt_file(ctx: Context) -> None:
    """``audit verify-receipt``: no database, only the receipt and the server's keys."""
    args = ctx.args
    receipt = _read(args.receipt).strip()
    try:
        jwks = json.loads(_read(args.jwks))
    except ValueError as exc:
        raise UsageError(f"--jwks is not a JSON document: {exc}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise UsageError('--jwks must be a JWK Set: {"keys": [...]}')
    try:
        claims = verify_receipt(receipt, jwks, issuer=args.issuer, auth_req_id=args.auth_req_id)
    except InvalidReceipt as exc:
        ctx.out.result({"valid": False, "problem": str(exc)}, f"receipt INVALID: {exc}")
        raise CommandError(f"the receipt does not verify: {exc}") from None
    uv = claims.get("user_verification")
    shown = claims["shown"]
    data = {"valid": True, "user_verified": uv is not None, "claims": claims}
    ctx.out.result(
        data,
        lambda: fields(
            [
                ("receipt", "valid"),
                ("issuer", claims.get("iss")),
                ("client", claims.get("client_id")),
                ("user", claims.get("sub")),
                ("ref", claims["ref"]),
                ("shown client", shown["client_name"]),
                ("binding message", shown["binding_message"]),
                ("scope", shown["scope"]),
                ("device", f"{claims['device']['device_id']} ({claims['device']['name']})"),
                ("decision", claims["decision"]),
                ("decided at", format_timestamp(datetime.fromtimestamp(claims["decided_at"], UTC))),
                ("user verified", _uv_text(uv, None)),
            ]
        ),
    )


def _read(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {name}: {exc}") from None
