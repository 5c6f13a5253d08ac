"""``backchannel revoke user SUBJECT | device DEVICE_ID | client CLIENT_ID``: central revocation.

Each revokes the live tokens in scope and ends the open requests (their polls
answer ``access_denied``) in one transaction (docs/operations.md, Revocation).
``revoke client`` leaves the client enabled; ``client disable`` also revokes.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from backchannel.authenticator.device_management import revoke_device
from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context
from backchannel.db.central_revocation import RevocationSummary
from backchannel.db.clients import select_client
from backchannel.db.users import select_user_by_subject
from backchannel.oauth.central_revocation import revoke_client, revoke_user

ACTOR = "cli"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    """The ``revoke`` command group."""
    group = commands.add_parser(
        "revoke", help="revoke the tokens and open requests of a user, device or client"
    )
    sub = group.add_subparsers(dest="revoke_command", required=True, metavar="SCOPE")

    user = sub.add_parser("user", parents=[common], help="all of a user's tokens and open requests")
    user.add_argument("subject", metavar="SUBJECT")
    user.set_defaults(run=database_command(revoke_user_command))

    device = sub.add_parser(
        "device",
        parents=[common],
        help="remove a device and revoke the tokens from requests it approved",
    )
    device.add_argument("device_id", metavar="DEVICE_ID")
    device.set_defaults(run=database_command(revoke_device_command))

    client = sub.add_parser(
        "client", parents=[common], help="all of a client's tokens and open requests"
    )
    client.add_argument("client_id", metavar="CLIENT_ID")
    client.set_defaults(run=database_command(revoke_client_command))


async def revoke_user_command(ctx: Context, conn: asyncpg.Connection) -> None:
    user = await select_user_by_subject(conn, ctx.args.subject)
    if user is None:
        raise CommandError(f"no user {ctx.args.subject!r}", exit_code=2)
    summary = await revoke_user(conn, user.user_id, actor=ACTOR)
    _report(ctx, "user", user.subject, summary)


async def revoke_device_command(ctx: Context, conn: asyncpg.Connection) -> None:
    summary = await revoke_device(conn, ctx.args.device_id, actor=ACTOR)
    if summary is None:
        raise CommandError(f"no device {ctx.args.device_id!r}", exit_code=2)
    _report(ctx, "device", ctx.args.device_id, summary)


async def revoke_client_command(ctx: Context, conn: asyncpg.Connection) -> None:
    if await select_client(conn, ctx.args.client_id) is None:
        raise CommandError(f"no client {ctx.args.client_id!r}", exit_code=2)
    summary = await revoke_client(conn, ctx.args.client_id, actor=ACTOR)
    _report(ctx, "client", ctx.args.client_id, summary)


def _report(ctx: Context, scope: str, target: str, summary: RevocationSummary) -> None:
    text = (
        f"revoked {scope} {target}: {summary.refresh_tokens} refresh tokens, "
        f"{summary.access_tokens} access tokens, {summary.requests} requests ended"
    )
    ctx.out.result({"scope": scope, "target": target, **summary.counts()}, text)
