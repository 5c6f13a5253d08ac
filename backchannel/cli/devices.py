"""``backchannel user enrol`` and ``backchannel device list|remove|keys|remove-key``: users'
authenticator phones and the WebAuthn keys on them.

``user enrol`` issues a one-time enrolment code and shows it as a link and a
terminal QR code; the user opens it on the phone that becomes their device.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import ipaddress
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from backchannel.authenticator.device_management import remove_credential, remove_device
from backchannel.authenticator.enrolment import ISSUED_BY_CLI, issue_enrolment_code
from backchannel.authenticator.webauthn_registration import b64url
from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, table
from backchannel.db.devices import Device, select_active_devices
from backchannel.db.users import select_user_by_subject
from backchannel.db.webauthn import WebAuthnCredential, select_user_credentials

# The bounds of the enrolment_code_ttl setting.
MIN_TTL, MAX_TTL = 60, 86400


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``device`` command group."""
    group = commands.add_parser("device", help="list and remove users' authenticator devices")
    sub = group.add_subparsers(dest="device_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[common], help="list active devices")
    listing.add_argument("--user", metavar="SUBJECT", help="only this user's devices")
    listing.set_defaults(run=database_command(list_devices))

    remove = sub.add_parser(
        "remove",
        parents=[common],
        help="remove a device: its calls are refused and its prompts withdrawn",
    )
    remove.add_argument("device_id", metavar="DEVICE_ID")
    remove.set_defaults(run=database_command(remove_one_device))

    keys = sub.add_parser(
        "keys", parents=[common], help="list the WebAuthn keys (fingerprint, face or PIN)"
    )
    keys.add_argument("--user", metavar="SUBJECT", help="only this user's keys")
    keys.set_defaults(run=database_command(list_keys))

    remove_key = sub.add_parser(
        "remove-key",
        parents=[common],
        help="remove a WebAuthn key from its device (the device stays enrolled)",
        epilog="A base64url id may start with '-': put `--` before it "
        "(backchannel device remove-key -- CREDENTIAL_ID).",
    )
    remove_key.add_argument(
        "credential_id", metavar="CREDENTIAL_ID", help="as `device keys` lists it"
    )
    remove_key.set_defaults(run=database_command(remove_one_key))


def add_enrol_parser(user_commands: Any, common: argparse.ArgumentParser) -> None:
    """``user enrol``, added to the ``user`` command group."""
    enrol = user_commands.add_parser(
        "enrol",
        parents=[common],
        help="issue a one-time link (and QR code) that enrols a phone as the user's device",
    )
    enrol.add_argument("subject", metavar="SUBJECT")
    enrol.add_argument(
        "--ttl",
        type=int,
        metavar="SECONDS",
        help="how long the code is valid (default: the enrolment_code_ttl setting)",
    )
    enrol.set_defaults(run=database_command(enrol_user))


async def enrol_user(ctx: Context, conn: asyncpg.Connection) -> None:
    args, settings = ctx.args, ctx.settings
    ttl = settings.enrolment_code_ttl if args.ttl is None else args.ttl
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise UsageError(f"--ttl must be between {MIN_TTL} and {MAX_TTL} seconds")
    user = await select_user_by_subject(conn, args.subject)
    if user is None:
        raise CommandError(f"no user {args.subject!r}", exit_code=2)
    if user.disabled:
        raise CommandError(f"user {args.subject!r} is disabled")
    code = await issue_enrolment_code(
        conn, user.user_id, ISSUED_BY_CLI, ttl, issuer=settings.issuer
    )
    if is_loopback_url(settings.issuer):
        ctx.out.note(
            f"warning: this link points at {settings.issuer}, a loopback address that a phone "
            "cannot reach; open it in a browser on this machine, or set BACKCHANNEL_ISSUER to "
            "an https URL the phone can reach"
        )

    def text() -> str:
        return "\n".join(
            [
                f"Enrolment link for {user.subject} (valid {_duration(code.expires_in)}, once):",
                f"  {code.url}",
                "",
                code.qr_terminal().rstrip("\n"),
                "Open it on the phone that should approve this user's requests.",
            ]
        )

    ctx.out.result(
        {
            "subject": user.subject,
            "code": code.code,
            "url": code.url,
            "expires_in": code.expires_in,
        },
        text,
    )


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` names this machine only (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def list_devices(ctx: Context, conn: asyncpg.Connection) -> None:
    user_id = await _user_id_of(conn, ctx.args.user)
    devices = await select_active_devices(conn, user_id=user_id)
    rows = [
        [d.device_id, subject, d.name, _when(d.created_at), _when(d.last_seen_at)]
        for d, subject in devices
    ]
    ctx.out.result(
        {"devices": [device_json(d, subject) for d, subject in devices]},
        lambda: table(["DEVICE_ID", "USER", "NAME", "ENROLLED", "LAST SEEN"], rows),
    )


async def remove_one_device(ctx: Context, conn: asyncpg.Connection) -> None:
    device = await remove_device(conn, ctx.args.device_id, detail={"by": "cli"})
    if device is None:
        raise CommandError(f"no active device {ctx.args.device_id!r}")
    ctx.out.result(
        {"device_id": device.device_id, "removed": True},
        f"removed device {device.device_id} ({device.name})",
    )


async def list_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    user_id = await _user_id_of(conn, ctx.args.user)
    credentials = await select_user_credentials(conn, user_id)
    found = [key_json(c) for c in credentials]
    rows = [
        [
            k["credential_id"],
            k["device_id"],
            k["aaguid"],
            "yes" if k["attested"] else "no",
            _when(c.created_at),
            _when(c.last_used_at),
        ]
        for k, c in zip(found, credentials, strict=True)
    ]
    ctx.out.result(
        {"keys": found},
        lambda: table(
            ["CREDENTIAL_ID", "DEVICE_ID", "AAGUID", "ATTESTED", "REGISTERED", "LAST USED"], rows
        ),
    )


async def remove_one_key(ctx: Context, conn: asyncpg.Connection) -> None:
    text = ctx.args.credential_id
    try:
        credential_id = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise UsageError("CREDENTIAL_ID is the base64url id `device keys` lists") from None
    removed = await remove_credential(conn, credential_id, actor=ctx.actor)
    if removed is None:
        raise CommandError(f"no WebAuthn key {text!r}")
    ctx.out.result(
        {"credential_id": text, "device_id": removed.device_id, "removed": True},
        f"removed WebAuthn key {text} from device {removed.device_id}",
    )


async def _user_id_of(conn: asyncpg.Connection, subject: str | None) -> int | None:
    """The user ``--user SUBJECT`` names (None without the option); exit 2 for nobody."""
    if subject is None:
        return None
    user = await select_user_by_subject(conn, subject)
    if user is None:
        raise CommandError(f"no user {subject!r}", exit_code=2)
    return user.user_id


def key_json(credential: WebAuthnCredential) -> dict[str, Any]:
    return {
        "credential_id": b64url(credential.credential_id),
        "device_id": credential.device_id,
        "aaguid": str(credential.aaguid),
        "attestation_format": credential.attestation_format,
        "attested": credential.attested,
        "backed_up": credential.backed_up,
        "transports": list(credential.transports),
        "created_at": credential.created_at.isoformat(),
        "last_used_at": credential.last_used_at.isoformat() if credential.last_used_at else None,
    }


def device_json(device: Device, subject: str) -> dict[str, Any]:
    return {
        "device_id": device.device_id,
        "subject": subject,
        "name": device.name,
        "created_at": device.created_at.isoformat(),
        "last_seen_at": device.last_seen_at.isoformat() if device.last_seen_at else None,
        "push": device.push_endpoint is not None,
    }


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M") if moment else "-"


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
