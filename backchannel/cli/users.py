"""``backchannel user create|list|add-hint``: the people who approve requests.

Every ``user`` command names its user positionally (``user create alice``,
``user enrol alice``); ``user create --subject alice`` still works for now.
"""

from __future__ import annotations

import argparse
from typing import Any

import asyncpg

from backchannel.cli import devices, groups
from backchannel.cli.database import database_command
from backchannel.cli.output import Context, UsageError, fields, table
from backchannel.db.users import LoginHint, User, select_users_with_hints
from backchannel.oauth.provisioning import add_login_hint, create_user, describe_hint, parse_hint

HINT_HELP = "login hint kind:value: email:…, tel:+…, account:…, username:…"


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("user", help="provision users and their login hints")
    sub = group.add_subparsers(dest="user_command", required=True, metavar="COMMAND")

    create = sub.add_parser("create", parents=[common], help="create a user")
    create.add_argument("subject", metavar="SUBJECT", nargs="?", help="the stable sub claim")
    # The former spelling, still accepted for a release: `user create --subject SUBJECT`.
    create.add_argument("--subject", dest="subject_option", help=argparse.SUPPRESS)
    create.add_argument("--name", default="", help="display name")
    create.add_argument(
        "--hint", action="append", default=[], metavar="KIND:VALUE", help=HINT_HELP + "; repeat"
    )
    create.add_argument("--user-code", help="a user_code the user will type (stored hashed)")
    create.set_defaults(run=database_command(create_with_hints))

    listing = sub.add_parser("list", parents=[common], help="list users and their hints")
    listing.set_defaults(run=database_command(list_users))

    add_hint = sub.add_parser("add-hint", parents=[common], help="attach a login hint")
    add_hint.add_argument("subject", metavar="SUBJECT")
    add_hint.add_argument("hint", metavar="KIND:VALUE", help=HINT_HELP)
    add_hint.set_defaults(run=database_command(add_hint_to_user))

    devices.add_enrol_parser(sub, common)
    groups.add_user_parsers(sub, common)


def user_json(user: User, hints: list[LoginHint]) -> dict[str, Any]:
    return {
        "subject": user.subject,
        "name": user.display_name,
        "email": user.email,
        "phone_number": user.phone_number,
        "login_hints": [describe_hint(h) for h in hints],
        "has_user_code": user.user_code_hash is not None,
        "created_at": user.created_at.isoformat(),
        "disabled_at": user.disabled_at.isoformat() if user.disabled_at else None,
    }


def subject_of_create(ctx: Context) -> str:
    """``user create SUBJECT``, or the deprecated ``user create --subject SUBJECT``."""
    positional, option = ctx.args.subject, ctx.args.subject_option
    if positional is not None and option is not None and positional != option:
        raise UsageError("give the subject once: `user create SUBJECT`")
    if option is not None:
        ctx.out.note(
            "note: `user create --subject SUBJECT` is deprecated and will be removed; "
            "write `user create SUBJECT`, as `user enrol` and `user add-hint` do"
        )
    subject: str | None = positional or option
    if subject is None:
        raise UsageError("user create needs a SUBJECT (the stable sub claim)")
    return subject


async def create_with_hints(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    subject = subject_of_create(ctx)
    hints = [parse_hint(h) for h in args.hint]
    user = await create_user(
        conn,
        subject=subject,
        display_name=args.name,
        hints=hints,
        user_code=args.user_code,
        actor=ctx.actor,
    )
    data = user_json(user, hints)
    ctx.out.result(
        data,
        lambda: (
            f"Created user {user.subject}\n"
            + fields([("login hints", data["login_hints"]), ("user code", data["has_user_code"])])
        ),
    )


async def list_users(ctx: Context, conn: asyncpg.Connection) -> None:
    users = await select_users_with_hints(conn)
    rows = [
        [
            u.subject,
            u.display_name,
            " ".join(describe_hint(h) for h in hints) or "-",
            "disabled" if u.disabled else "enabled",
        ]
        for u, hints in users
    ]
    ctx.out.result(
        {"users": [user_json(u, hints) for u, hints in users]},
        lambda: table(["SUBJECT", "NAME", "LOGIN HINTS", "STATUS"], rows),
    )


async def add_hint_to_user(ctx: Context, conn: asyncpg.Connection) -> None:
    hint = parse_hint(ctx.args.hint)
    user = await add_login_hint(conn, ctx.args.subject, hint, actor=ctx.actor)
    ctx.out.result(
        {"subject": user.subject, "login_hint": describe_hint(hint)},
        f"added {describe_hint(hint)} to {user.subject}",
    )
