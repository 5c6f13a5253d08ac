"""``backchannel user group add|remove SUBJECT GROUP`` and ``user groups SUBJECT``.

Groups are what group-based policy rules look at (docs/policy.md). They are
read per request, so a change applies to the next request on every replica.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError
from backchannel.db.audit import insert_audit_event
from backchannel.db.groups import delete_user_group, insert_user_group, select_user_groups
from backchannel.db.users import User, select_user_by_subject
from backchannel.policy.rules import GROUP_NAME


def add_user_parsers(user_commands: Any, common: argparse.ArgumentParser) -> None:
    """``user group …`` and ``user groups``, added to the ``user`` command group."""
    group = user_commands.add_parser("group", help="add a user to a group or remove them")
    sub = group.add_subparsers(dest="group_command", required=True, metavar="COMMAND")
    for name, helptext in (("add", "add the user to a group"), ("remove", "take them out")):
        action = sub.add_parser(name, parents=[common], help=helptext)
        action.add_argument("subject", metavar="SUBJECT")
        action.add_argument("group", metavar="GROUP")
        action.set_defaults(run=database_command(change_membership), add=name == "add")

    listing = user_commands.add_parser("groups", parents=[common], help="list a user's groups")
    listing.add_argument("subject", metavar="SUBJECT")
    listing.set_defaults(run=database_command(list_groups))


async def change_membership(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    if not GROUP_NAME.fullmatch(args.group):
        raise UsageError(
            f"{args.group!r} is not a group name: 1-128 of A-Z a-z 0-9 . _ : @ / -, "
            "starting with a letter or digit"
        )
    user = await _user(conn, args.subject)
    async with conn.transaction():
        if args.add:
            changed = await insert_user_group(conn, user.user_id, args.group)
        else:
            changed = await delete_user_group(conn, user.user_id, args.group)
        if changed:
            await insert_audit_event(
                conn,
                "user_groups_changed",
                user_id=user.user_id,
                detail={
                    "actor": ctx.actor,
                    "action": "add" if args.add else "remove",
                    "group": args.group,
                },
            )
    groups = await select_user_groups(conn, user.user_id)
    verb = (
        ("added to" if args.add else "removed from")
        if changed
        else ("already in" if args.add else "not in")
    )
    ctx.out.result(
        {"subject": user.subject, "groups": groups, "changed": changed},
        f"{user.subject} {verb} {args.group}",
    )


async def list_groups(ctx: Context, conn: asyncpg.Connection) -> None:
    user = await _user(conn, ctx.args.subject)
    groups = await select_user_groups(conn, user.user_id)
    ctx.out.result({"subject": user.subject, "groups": groups}, "\n".join(groups) or "(no groups)")


async def _user(conn: asyncpg.Connection, subject: str) -> User:
    user = await select_user_by_subject(conn, subject)
    if user is None:
        raise CommandError(f"no user {subject!r}")
    return user
