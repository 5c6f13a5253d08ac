"""``backchannel keys list|generate|rotate|retire``: the server's signing keys."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, table
from backchannel.db.audit import insert_audit_event
from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.db.signing_keys import (
    lock_signing_keys,
    select_published_keys,
    update_private_jwk,
)
from backchannel.delivery.vapid import select_usable_vapid_pems, update_vapid_pem, vapid_row
from backchannel.key_wrapping import WRAPPED_MEMBER, KeyWrapper, new_kek
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.oauth.keys import (
    KEYS_EVENT,
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

    wrap = sub.add_parser(
        "wrap",
        parents=[common],
        help="wrap stored private keys (signing and VAPID) under BACKCHANNEL_KEY_ENCRYPTION_KEY",
    )
    wrap.set_defaults(run=database_command(wrap_keys))

    kek = sub.add_parser(
        "new-encryption-key", parents=[common], help="print a fresh key-encryption key"
    )
    kek.set_defaults(run=print_new_kek)


def _wrapper(ctx: Context) -> KeyWrapper:
    return KeyWrapper.from_settings(ctx.settings)


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
    key = await generate_signing_key(conn, ctx.args.alg, _wrapper(ctx), actor=ctx.actor)
    ctx.out.result(key.to_json(), lambda: f"new active {key.alg} key {key.kid}")


async def rotate_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    keys = await rotate_signing_keys(conn, _wrapper(ctx), ctx.args.alg, actor=ctx.actor)
    _emit(ctx, keys, "new active keys (the former ones stay published until retired):")


async def retire_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    older_than = ctx.args.older_than
    if older_than is None:
        older_than = ctx.settings.key_retire_after
    keys = await retire_signing_keys(conn, older_than, actor=ctx.actor)
    _emit(ctx, keys, f"retired {len(keys)} key(s):")


async def wrap_keys(ctx: Context, conn: asyncpg.Connection) -> None:
    wrapper = _wrapper(ctx)
    if not wrapper.wraps:
        raise CommandError(
            "set BACKCHANNEL_KEY_ENCRYPTION_KEY first (`backchannel keys new-encryption-key`)"
        )
    counts = await wrap_stored_keys(conn, wrapper, actor=ctx.actor)
    ctx.out.result(
        {"wrapped": counts, "kek_id": wrapper.kek_id},
        lambda: (
            f"wrapped {counts['signing_keys']} signing key(s) and"
            f" {counts['vapid_keys']} VAPID key(s) under key-encryption key {wrapper.kek_id}"
        ),
    )


def print_new_kek(ctx: Context) -> None:
    kek = new_kek()
    ctx.out.result(
        {"key_encryption_key": kek},
        lambda: (
            f"{kek}\n(set it as BACKCHANNEL_KEY_ENCRYPTION_KEY on every replica, then run"
            " `backchannel keys wrap`; keep a copy: without it the stored keys cannot be read)"
        ),
    )


async def wrap_stored_keys(
    conn: asyncpg.Connection, wrapper: KeyWrapper, *, actor: str = "operator"
) -> dict[str, int]:
    """Wrap every stored private key not yet wrapped under the current key-encryption key
    (plaintext, or wrapped under a previous one); how many, per table.

    One transaction under the key-change lock; replicas reload their keys on the
    ``keys`` event (and read plaintext and wrapped keys alike meanwhile).
    """
    counts = {"signing_keys": 0, "vapid_keys": 0}
    async with conn.transaction():
        await lock_signing_keys(conn)
        for key in await select_published_keys(conn):
            if not wrapper.wrapped_by_current(key.private_jwk.get(WRAPPED_MEMBER, "")):
                private = wrapper.unwrap_jwk(key.private_jwk)
                await update_private_jwk(conn, key.kid, wrapper.wrap_jwk(private))
                counts["signing_keys"] += 1
        for kid, pem in (await select_usable_vapid_pems(conn)).items():
            if not wrapper.wrapped_by_current(pem):
                row = vapid_row(kid)
                await update_vapid_pem(conn, kid, wrapper.wrap(wrapper.unwrap(pem, row), row))
                counts["vapid_keys"] += 1
        if counts["signing_keys"]:
            await notify(conn, CONFIG_CHANNEL, KEYS_EVENT)
        if any(counts.values()):
            await insert_audit_event(
                conn,
                "keys_rewrapped",
                detail={"actor": actor, "kek_id": wrapper.kek_id, "counts": counts},
            )
    return counts
