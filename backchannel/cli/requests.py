"""``backchannel requests decide``: approve or deny a pending request as its user.

For development and support: it stands in for the user's authenticator and
takes the same path (``record_decision``): audit row, wake-up of held polls.
It needs database access, never an HTTP endpoint.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context
from backchannel.errors import RequestNotPending
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret

DECISIONS = {"approve": "approved", "deny": "denied"}


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("requests", help="act on backchannel authentication requests")
    sub = group.add_subparsers(dest="requests_command", required=True, metavar="COMMAND")
    decide = sub.add_parser(
        "decide",
        parents=[common],
        help="approve or deny a pending request in its user's place",
        description="Approve or deny a pending request in its user's place, as the "
        "authenticator would. An auth_req_id may start with '-': write "
        "`backchannel requests decide -- AUTH_REQ_ID approve`.",
    )
    decide.add_argument("auth_req_id", metavar="AUTH_REQ_ID", help="as returned by /bc-authorize")
    decide.add_argument("decision", choices=sorted(DECISIONS))
    decide.add_argument("--reason", help="why it is denied (recorded in the audit trail)")
    decide.set_defaults(run=database_command(decide_request))


async def decide_request(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    if args.reason is not None and args.decision != "deny":
        raise CommandError("--reason is only for deny", exit_code=2)
    try:
        decided = await record_decision(
            conn,
            hash_secret(args.auth_req_id),
            DECISIONS[args.decision],  # type: ignore[arg-type]
            reason=args.reason,
            detail={"via": "cli"},
        )
    except RequestNotPending as exc:
        raise CommandError(f"cannot {args.decision}: {exc.description}") from None
    ctx.out.result(
        {
            "client_id": decided.client_id,
            "status": decided.status,
            "denial_reason": decided.denial_reason,
        },
        f"request {decided.status} (client {decided.client_id})",
    )
