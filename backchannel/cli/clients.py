"""``backchannel client create|list|show|disable|enable``: the registered relying parties."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import asyncpg

from backchannel.cli.database import database_command
from backchannel.cli.output import CommandError, Context, UsageError, fields, table
from backchannel.db.clients import Client, select_client, select_clients
from backchannel.oauth.algorithms import REQUEST_OBJECT_ALGS_BY_REGISTRATION, SIGNING_ALGS
from backchannel.oauth.central_revocation import revoke_client
from backchannel.oauth.registration import (
    AUTH_METHODS,
    DEFAULT_SCOPES,
    DELIVERY_MODES,
    GRANT_TYPES,
    ClientRegistration,
    register_client,
    set_client_disabled,
    update_client,
)


def add_parser(commands: Any, common: argparse.ArgumentParser) -> None:
    group = commands.add_parser("client", help="register and manage relying parties")
    sub = group.add_subparsers(dest="client_command", required=True, metavar="COMMAND")

    create = sub.add_parser(
        "create",
        parents=[common],
        help="register a client; prints its secret once",
        description="Register a relying party. A client_secret_* client's secret is printed "
        "once; only its hash is stored.",
    )
    create.add_argument("--name", required=True, help="shown to users on their device")
    create.add_argument("--client-id", help="default: a random identifier")
    create.add_argument(
        "--auth-method",
        choices=AUTH_METHODS,
        default="client_secret_basic",
        help="token endpoint authentication (default: %(default)s)",
    )
    keys = create.add_mutually_exclusive_group()
    keys.add_argument("--jwks-file", type=Path, help="JSON file with the client's public JWK set")
    keys.add_argument("--jwks-uri", help="https URL of the client's public JWK set")
    create.add_argument("--delivery-mode", choices=DELIVERY_MODES, default="poll")
    create.add_argument("--notification-endpoint", help="required for ping and push")
    create.add_argument(
        "--scope",
        action="append",
        metavar="SCOPE",
        help=f"allowed scopes; repeat or space-separate (default: {' '.join(DEFAULT_SCOPES)})",
    )
    create.add_argument(
        "--grant-type",
        action="append",
        choices=GRANT_TYPES,
        metavar="GRANT",
        help="allowed grant types; repeat (default: the CIBA grant and refresh_token)",
    )
    create.add_argument(
        "--request-signing-alg",
        choices=REQUEST_OBJECT_ALGS_BY_REGISTRATION,
        help="algorithm of the client's signed authentication requests",
    )
    create.add_argument(
        "--require-signed-request",
        action="store_true",
        help="refuse unsigned authentication requests",
    )
    create.add_argument(
        "--user-code", action="store_true", help="the client sends the user's user_code"
    )
    create.add_argument("--id-token-alg", choices=SIGNING_ALGS, default="ES256")
    create.add_argument("--access-token-ttl", type=int, metavar="SECONDS")
    create.add_argument("--refresh-token-ttl", type=int, metavar="SECONDS")
    create.add_argument("--max-requested-expiry", type=int, metavar="SECONDS")
    create.add_argument(
        "--login-hint-token-issuer",
        action="append",
        default=[],
        metavar="ISS=JWKS_FILE",
        help="accept login_hint_token signed by ISS with keys from JWKS_FILE; repeatable",
    )
    create.add_argument(
        "--number-matching",
        action="store_true",
        help="approval needs the number this client shows its user (returned by /bc-authorize)",
    )
    create.add_argument(
        "--authorization-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="an RFC 9396 authorization_details type the client may send; repeatable",
    )
    create.add_argument(
        "--may-enrol-users",
        action="store_true",
        help="may obtain authenticator enrolment codes for users (POST /admin/enrolments)",
    )
    create.set_defaults(run=database_command(create_client))

    listing = sub.add_parser("list", parents=[common], help="list clients")
    listing.set_defaults(run=database_command(list_clients))

    show = sub.add_parser("show", parents=[common], help="show one client's metadata")
    show.add_argument("client_id", metavar="ID")
    show.set_defaults(run=database_command(show_client))

    update = sub.add_parser(
        "update",
        parents=[common],
        help="change a client's metadata (endpoint, delivery mode, scopes, ...)",
        description="Change a registered client's metadata; options not given keep their "
        "value, and the result is validated as a whole, as at registration. The client id, "
        "secret and authentication method stay.",
    )
    update.add_argument("client_id", metavar="ID")
    update.add_argument("--name")
    update_keys = update.add_mutually_exclusive_group()
    update_keys.add_argument("--jwks-file", type=Path)
    update_keys.add_argument("--jwks-uri")
    update.add_argument("--delivery-mode", choices=DELIVERY_MODES)
    update.add_argument(
        "--notification-endpoint", help="for ping and push; an empty value removes it"
    )
    update.add_argument("--scope", action="append", metavar="SCOPE")
    update.add_argument("--grant-type", action="append", choices=GRANT_TYPES, metavar="GRANT")
    update.add_argument("--request-signing-alg", choices=REQUEST_OBJECT_ALGS_BY_REGISTRATION)
    update.add_argument("--id-token-alg", choices=SIGNING_ALGS)
    update.add_argument(
        "--authorization-type",
        action="append",
        metavar="TYPE",
        help="the RFC 9396 types the client may send (replaces the list; '' for none)",
    )
    for flag in ("--access-token-ttl", "--refresh-token-ttl", "--max-requested-expiry"):
        update.add_argument(flag, type=int, metavar="SECONDS")
    for flag in (
        "--require-signed-request",
        "--user-code",
        "--number-matching",
        "--may-enrol-users",
    ):
        update.add_argument(flag, action=argparse.BooleanOptionalAction, default=None)
    update.set_defaults(run=database_command(update_client_command))

    for name, helptext in (("disable", "refuse the client from now on"), ("enable", "re-enable")):
        action = sub.add_parser(name, parents=[common], help=helptext)
        action.add_argument("client_id", metavar="ID")
        action.set_defaults(run=database_command(change_client), disable=name == "disable")


def registration_from_args(args: argparse.Namespace) -> ClientRegistration:
    scopes = DEFAULT_SCOPES
    if args.scope:
        scopes = tuple(s for value in args.scope for s in value.split())
    return ClientRegistration(
        name=args.name,
        client_id=args.client_id,
        token_endpoint_auth_method=args.auth_method,
        jwks=_read_json(args.jwks_file, "--jwks-file") if args.jwks_file else None,
        jwks_uri=args.jwks_uri,
        backchannel_token_delivery_mode=args.delivery_mode,
        backchannel_client_notification_endpoint=args.notification_endpoint,
        scopes=scopes,
        grant_types=tuple(args.grant_type) if args.grant_type else GRANT_TYPES,
        backchannel_authentication_request_signing_alg=args.request_signing_alg,
        require_signed_request=args.require_signed_request,
        backchannel_user_code_parameter=args.user_code,
        id_token_signed_response_alg=args.id_token_alg,
        access_token_ttl=args.access_token_ttl,
        refresh_token_ttl=args.refresh_token_ttl,
        max_requested_expiry=args.max_requested_expiry,
        login_hint_token_issuers=tuple(_issuer(v) for v in args.login_hint_token_issuer),
        may_enrol_users=args.may_enrol_users,
        number_matching=args.number_matching,
        authorization_details_types=tuple(args.authorization_type),
    )


def _issuer(value: str) -> dict[str, Any]:
    iss, sep, path = value.rpartition("=")
    if not sep or not iss or not path:
        raise UsageError(f"--login-hint-token-issuer {value!r}: write ISS=JWKS_FILE")
    return {"iss": iss, "jwks": _read_json(Path(path), "--login-hint-token-issuer")}


def _read_json(path: Path, option: str) -> Any:
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"{option} {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} {path}: not JSON: {exc}") from None


async def create_client(ctx: Context, conn: asyncpg.Connection) -> None:
    registered = await register_client(
        conn, registration_from_args(ctx.args), ctx.settings, actor=ctx.actor
    )
    client, secret = registered.client, registered.secret

    def text() -> str:
        lines = [
            f"Registered client {client.name!r} "
            f"({client.token_endpoint_auth_method}, {client.backchannel_token_delivery_mode} mode)",
            f"  client_id:     {client.client_id}",
        ]
        if secret is not None:
            lines.append(f"  client_secret: {secret}")
            lines.append("The secret is shown only now; only its hash is stored. Keep it safe.")
        return "\n".join(lines)

    ctx.out.result({**client_json(client), "client_secret": secret}, text)


def changes_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The registration fields ``client update`` was asked to change."""
    given: dict[str, Any] = {
        "name": args.name,
        "jwks_uri": args.jwks_uri,
        "backchannel_token_delivery_mode": args.delivery_mode,
        "backchannel_authentication_request_signing_alg": args.request_signing_alg,
        "id_token_signed_response_alg": args.id_token_alg,
        "access_token_ttl": args.access_token_ttl,
        "refresh_token_ttl": args.refresh_token_ttl,
        "max_requested_expiry": args.max_requested_expiry,
        "require_signed_request": args.require_signed_request,
        "backchannel_user_code_parameter": args.user_code,
        "number_matching": args.number_matching,
        "may_enrol_users": args.may_enrol_users,
    }
    changes = {name: value for name, value in given.items() if value is not None}
    if args.jwks_file is not None:
        changes["jwks"] = _read_json(args.jwks_file, "--jwks-file")
        changes["jwks_uri"] = None
    elif args.jwks_uri is not None:
        changes["jwks"] = None
    if args.notification_endpoint is not None:
        changes["backchannel_client_notification_endpoint"] = args.notification_endpoint or None
    if args.scope:
        changes["scopes"] = tuple(s for value in args.scope for s in value.split())
    if args.grant_type:
        changes["grant_types"] = tuple(args.grant_type)
    if args.authorization_type is not None:
        changes["authorization_details_types"] = tuple(t for t in args.authorization_type if t)
    if not changes:
        raise UsageError("nothing to change: give at least one option")
    return changes


async def update_client_command(ctx: Context, conn: asyncpg.Connection) -> None:
    changes = changes_from_args(ctx.args)
    client = await update_client(conn, ctx.args.client_id, changes, ctx.settings, actor=ctx.actor)
    if client is None:
        raise CommandError(f"no client {ctx.args.client_id!r}")
    updated = client
    ctx.out.result(
        client_json(updated), lambda: f"updated client {updated.client_id}\n" + describe(updated)
    )


async def list_clients(ctx: Context, conn: asyncpg.Connection) -> None:
    clients = await select_clients(conn)
    rows = [
        [
            c.client_id,
            c.name,
            c.token_endpoint_auth_method,
            c.backchannel_token_delivery_mode,
            "disabled" if c.disabled else "enabled",
        ]
        for c in clients
    ]
    ctx.out.result(
        {"clients": [client_json(c) for c in clients]},
        lambda: table(["CLIENT_ID", "NAME", "AUTH", "MODE", "STATUS"], rows),
    )


async def show_client(ctx: Context, conn: asyncpg.Connection) -> None:
    client = await select_client(conn, ctx.args.client_id)
    if client is None:
        raise CommandError(f"no client {ctx.args.client_id!r}")
    ctx.out.result(client_json(client), lambda: describe(client))


async def change_client(ctx: Context, conn: asyncpg.Connection) -> None:
    """Enable, or disable and revoke the client's tokens and open requests, in one go."""
    async with conn.transaction():
        client = await set_client_disabled(
            conn, ctx.args.client_id, ctx.args.disable, actor=ctx.actor
        )
        if client is None:
            raise CommandError(f"no client {ctx.args.client_id!r}")
        revoked = None
        if ctx.args.disable:
            revoked = await revoke_client(conn, client.client_id, actor="cli")
    state = "disabled" if client.disabled else "enabled"
    text = f"client {client.client_id} is {state}"
    body = client_json(client)
    if revoked is not None:
        body["revoked"] = revoked.counts()
        text += f"; revoked {revoked.refresh_tokens + revoked.access_tokens} tokens, "
        text += f"ended {revoked.requests} requests"
    ctx.out.result(body, text)


def client_json(client: Client) -> dict[str, Any]:
    """What an operator may see of a client: its metadata, never the secret hash."""
    return {
        **client.public_metadata(),
        "may_enrol_users": client.may_enrol_users,
        "number_matching": client.number_matching,
    }


def describe(client: Client) -> str:
    metadata = client_json(client)
    metadata["status"] = "disabled" if client.disabled else "enabled"
    return fields(list(metadata.items()))
