"""``backchannel keys list|generate|rotate|retire``: the server's signing keys."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import Context, table
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.oauth.keys import (
    SigningKeyInfo,
    generate_signing_key,
    list_signing_keys,
    retire_signing_keys,
    rotate_signing_keys,
)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("keys", help="manage the signing keys (ID and access tokens)")
    sub = group.add_subparsers(dest="keys_command", required=True, metavar="COMMAND")

    listing = sub.add_parser("list", parents=[common], help="list keys (never private parts)")
    listing.set_defaults(run=database_command(list_keys))

    generate = sub.add_parser(
        "generate", parents=[common], help="make a new active key; the old one stays published"
    )
    generate.add_argument("--alg", choices=SIGNING_ALGS, default="ES256")
    generate.set_defaults(run=database_command(generate_key))

    rotate = sub.add_parser(
        "rotate", parents=[common], help="replace the active key of each algorithm"
    )
    rotate.add_argument(
        "--alg", action="append", choices=SIGNING_ALGS, help="only these algorithms; repeat"
    )
    rotate.set_defaults(run=database_command(rotate_keys))

    retire = sub.add_parser(
        "retire", parents=[common], help="stop publishing keys superseded long enough ago"
    )
    retire.add_argument(
        "--older-than",
        type=int,
        metavar="SECONDS",
        help="superseded more than this long ago (default: BACKCHANNEL_KEY_RETIRE_AFTER)",
    )
    retire.set_defaults(run=database_command(retire_keys))


def _table(keys: Sequence[SigningKeyInfo]) -> str:
    rows = [
        [
            k.kid,
            k.alg,
            k.status,
            k.created_at.isoformat(timespec="seconds"),
            k.superseded_at.isoformat(timespec="seconds") if k.superseded_at else "-",
        ]
        for k in keys
    ]
    return table(["KID", "ALG", "STATUS", "CREATED", "SUPERSEDED"], rows)


def _emit(ctx: Context, keys: Sequence[SigningKeyInfo], heading: str) -> None:
    ctx.out.result({"keys": [k.to_json() for k in keys]}, lambda: f"{heading}\n{_table(keys)}")


async def list_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    keys = await list_signing_keys(conn)
    ctx.out.result({"keys": [k.to_json() for k in keys]}, lambda: _table(keys))


async def generate_key(ctx: Context, conn: asyncpg.Connection) -> None:
    key = await generate_signing_key(conn, ctx.args.alg)
    ctx.out.result(key.to_json(), lambda: f"new active {key.alg} key {key.kid}")


async def rotate_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    keys = await rotate_signing_keys(conn, ctx.args.alg)
    _emit(ctx, keys, "new active keys (the former ones stay published until retired):")


async def retire_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    older_than = ctx.args.older_than
    if older_than is None:
        older_than = ctx.settings.key_retire_after
    keys = await retire_signing_keys(conn, older_than)
    _emit(ctx, keys, f"retired {len(keys)} key(s):")
