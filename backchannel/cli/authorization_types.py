"""``backchannel authorization-type add|list|remove``: RFC 9396 types a client may send."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, table
from backchannel.db.authorization_types import select_authorization_types
from backchannel.oauth.authorization_details import (
    BUILT_IN_TYPES,
    built_in_schema,
    register_authorization_type,
    remove_authorization_type,
)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser(
        "authorization-type",
        help="rich authorization types (RFC 9396) and their JSON Schemas",
        description="Types a client may send as authorization_details at /bc-authorize. "
        f"Built in: {', '.join(BUILT_IN_TYPES)}. A client is allowed types with "
        "`client create/update --authorization-type TYPE`.",
    )
    sub = group.add_subparsers(dest="authorization_type_command", required=True, metavar="COMMAND")
    add = sub.add_parser("add", parents=[common], help="register a type, or replace its schema")
    add.add_argument("type", metavar="TYPE")
    add.add_argument("--schema", type=Path, required=True, help="a JSON Schema (2020-12) file")
    add.add_argument("--description")
    add.set_defaults(run=database_command(add_type))
    listing = sub.add_parser("list", parents=[common], help="list the types")
    listing.set_defaults(run=database_command(list_types))
    remove = sub.add_parser("remove", parents=[common], help="unregister a type")
    remove.add_argument("type", metavar="TYPE")
    remove.set_defaults(run=database_command(remove_type))


async def add_type(ctx: Context, conn: asyncpg.Connection) -> None:
    args = ctx.args
    try:
        schema = json.loads(args.schema.read_text())
    except OSError as exc:
        raise UsageError(f"--schema {args.schema}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"--schema {args.schema}: not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise UsageError(f"--schema {args.schema}: a JSON Schema is an object")
    try:
        new = await register_authorization_type(
            conn, args.type, schema, description=args.description, actor=ctx.actor
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    verb = "registered" if new else "replaced the schema of"
    ctx.out.result({"type": args.type, "new": new}, f"{verb} authorization type {args.type}")


async def list_types(ctx: Context, conn: asyncpg.Connection) -> None:
    registered = await select_authorization_types(conn)
    rows = [
        [name, "built in", built_in_schema(name).get("description", "")] for name in BUILT_IN_TYPES
    ]
    rows += [[t.type, t.created_at.date().isoformat(), t.description or ""] for t in registered]
    ctx.out.result(
        {
            "built_in": list(BUILT_IN_TYPES),
            "registered": [
                {"type": t.type, "description": t.description, "schema": t.schema}
                for t in registered
            ],
        },
        lambda: table(["TYPE", "REGISTERED", "DESCRIPTION"], rows),
    )


async def remove_type(ctx: Context, conn: asyncpg.Connection) -> None:
    if not await remove_authorization_type(conn, ctx.args.type, actor=ctx.actor):
        raise CommandError(f"no registered authorization type {ctx.args.type!r}")
    ctx.out.result({"type": ctx.args.type, "removed": True}, f"removed {ctx.args.type}")
