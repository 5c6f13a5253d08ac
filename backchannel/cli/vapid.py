"""``backchannel vapid list|generate|rotate|retire``: the keys Web Push messages are signed with."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, table
from backchannel.delivery.vapid import (
    VapidKeyInfo,
    VapidKeyInUse,
    ensure_vapid_key,
    list_vapid_keys,
    retire_vapid_keys,
    rotate_vapid_key,
    select_active_vapid_key,
)
from backchannel.key_wrapping import KeyWrapper


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("vapid", help="manage the VAPID keys (Web Push to the app)")
    sub = group.add_subparsers(dest="vapid_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[common], help="list keys (never private parts)")
    listing.set_defaults(run=database_command(list_keys))

    generate = sub.add_parser(
        "generate",
        parents=[common],
        help="make the first key if there is none (the server also does at start)",
    )
    generate.set_defaults(run=database_command(generate_key))

    rotate = sub.add_parser(
        "rotate",
        parents=[common],
        help="make a new active key; devices keep the old one until they subscribe again",
    )
    rotate.set_defaults(run=database_command(rotate_key))

    retire = sub.add_parser(
        "retire",
        parents=[common],
        help="erase previous keys; without KID, those no subscribed device uses",
    )
    retire.add_argument("kid", nargs="*", metavar="KID", help="retire these previous keys")
    retire.add_argument(
        "--force",
        action="store_true",
        help="retire a KID even though devices still use it (their pushes fail until they "
        "subscribe again)",
    )
    retire.set_defaults(run=database_command(retire_keys))


def _table(keys: Sequence[VapidKeyInfo]) -> str:
    rows = [
        [
            k.kid,
            k.status,
            str(k.devices),
            k.created_at.isoformat(timespec="seconds"),
            k.superseded_at.isoformat(timespec="seconds") if k.superseded_at else "-",
            k.public_key if k.status == "active" else k.public_key[:16] + "…",
        ]
        for k in keys
    ]
    return table(["KID", "STATUS", "DEVICES", "CREATED", "SUPERSEDED", "PUBLIC_KEY"], rows)


def _emit(ctx: Context, keys: Sequence[VapidKeyInfo], heading: str) -> None:
    ctx.out.result({"keys": [k.to_json() for k in keys]}, lambda: f"{heading}\n{_table(keys)}")


async def list_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    keys = await list_vapid_keys(conn)
    ctx.out.result({"keys": [k.to_json() for k in keys]}, lambda: _table(keys))


async def generate_key(ctx: Context, conn: asyncpg.Connection) -> None:
    existing = await select_active_vapid_key(conn)
    key = await ensure_vapid_key(conn, KeyWrapper.from_settings(ctx.settings))
    created = existing is None
    state = "new active" if created else "already an active"
    ctx.out.result(
        {**key.to_json(), "created": created},
        lambda: f"{state} VAPID key {key.kid}\napplicationServerKey: {key.public_key}",
    )


async def rotate_key(ctx: Context, conn: asyncpg.Connection) -> None:
    key = await rotate_vapid_key(conn, KeyWrapper.from_settings(ctx.settings), actor=ctx.actor)
    ctx.out.result(
        key.to_json(),
        lambda: (
            f"new active VAPID key {key.kid}\napplicationServerKey: {key.public_key}\n"
            "Devices keep using the previous key until the app subscribes again; retire it "
            "when `backchannel vapid list` shows no device on it."
        ),
    )


async def retire_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    try:
        keys = await retire_vapid_keys(conn, ctx.args.kid, force=ctx.args.force, actor=ctx.actor)
    except VapidKeyInUse as exc:
        raise CommandError(f"{exc}; use --force to retire anyway") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    _emit(ctx, keys, f"retired {len(keys)} key(s):")
