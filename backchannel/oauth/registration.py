"""Client registration: validate relying-party metadata and store the client.

The metadata rules are those of CIBA Core §4 (delivery mode, notification
endpoint, request signing algorithm, user code) and OpenID Connect Dynamic
Client Registration §2 (auth method, keys, grant types). Every problem is
reported together. The secret of a ``client_secret_*`` client is generated
here, returned once, and only its SHA-256 is stored.

Every change to a client announces ``client:<client_id>`` on the config
channel in the same transaction, so every replica drops its cached copy.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from backchannel.db.audit import insert_audit_event
from backchannel.db.clients import (
    CIBA_GRANT,
    Client,
    insert_client,
    select_client_for_update,
    update_client_disabled,
    update_client_registration,
)
from backchannel.db.listener import CONFIG_CHANNEL, notify
from backchannel.oauth.algorithms import REQUEST_OBJECT_ALGS_BY_REGISTRATION, SIGNING_ALGS
from backchannel.oauth.client_certificates import SUBJECT_KINDS, check_subject_value
from backchannel.oauth.fapi_ciba import PROFILES as PROFILES
from backchannel.oauth.fapi_ciba import registration_problems as profile_problems
from backchannel.oauth.secrets import hash_secret, new_identifier, new_secret
from backchannel.settings import Settings
from backchannel.url_guard import (
    Unresolvable,
    UnsafeURL,
    check_outbound_url,
    resolve_public_addresses,
)

AUTH_METHODS: tuple[str, ...] = (
    "client_secret_basic",
    "client_secret_post",
    "private_key_jwt",
    "tls_client_auth",
    "self_signed_tls_client_auth",
)
SECRET_AUTH_METHODS: tuple[str, ...] = ("client_secret_basic", "client_secret_post")
# What the metadata of sender-constrained tokens, mutual TLS and the profile adds.
SENDER_CONSTRAINT_FIELDS: tuple[str, ...] = (
    "tls_client_auth_subject_dn",
    "tls_client_auth_san_dns",
    "tls_client_auth_san_uri",
    "tls_client_auth_san_ip",
    "tls_client_auth_san_email",
    "tls_client_certificate_bound_access_tokens",
    "dpop_bound_access_tokens",
    "require_dpop_nonce",
    "profile",
)
DELIVERY_MODES: tuple[str, ...] = ("poll", "ping", "push")
GRANT_TYPES: tuple[str, ...] = (CIBA_GRANT, "refresh_token")
DEFAULT_SCOPES: tuple[str, ...] = ("openid", "profile", "email", "phone", "offline_access")

# Members that only a private (or symmetric) JWK carries (RFC 7518 §6).
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_PUBLIC_KTY = frozenset({"EC", "RSA", "OKP"})
_DETAIL_TYPE = re.compile(r"^[A-Za-z0-9_.:/-]{1,128}\Z")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")

_TTL_BOUNDS = {
    "access_token_ttl": (30, 86400),
    "refresh_token_ttl": (60, 90 * 86400),
    "max_requested_expiry": (10, 86400),
}


class RegistrationError(ValueError):
    """The metadata is invalid; ``problems`` names each bad value."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class ClientRegistration:
    """What an operator asks for; defaults make a poll-mode client_secret_basic client."""

    name: str
    client_id: str | None = None
    token_endpoint_auth_method: str = "client_secret_basic"
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    backchannel_token_delivery_mode: str = "poll"
    backchannel_client_notification_endpoint: str | None = None
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    grant_types: tuple[str, ...] = GRANT_TYPES
    backchannel_authentication_request_signing_alg: str | None = None
    require_signed_request: bool = False
    backchannel_user_code_parameter: bool = False
    id_token_signed_response_alg: str = "ES256"
    access_token_ttl: int | None = None
    refresh_token_ttl: int | None = None
    max_requested_expiry: int | None = None
    # [{"iss": "...", "jwks": {"keys": [...]}}]: issuers whose login_hint_token is accepted.
    login_hint_token_issuers: tuple[Mapping[str, Any], ...] = field(default=())
    # May ask POST /admin/enrolments for users' authenticator enrolment codes.
    may_enrol_users: bool = False
    # The user must pick the number this client shows (oauth/number_matching.py).
    number_matching: bool = False
    # RFC 9396 types this client may send as authorization_details.
    authorization_details_types: tuple[str, ...] = ()
    # tls_client_auth: exactly one certificate subject value (RFC 8705 §2.1.2).
    tls_client_auth_subject_dn: str | None = None
    tls_client_auth_san_dns: str | None = None
    tls_client_auth_san_uri: str | None = None
    tls_client_auth_san_ip: str | None = None
    tls_client_auth_san_email: str | None = None
    # Sender-constrained access tokens: mutual TLS (RFC 8705 §3.4), DPoP (RFC 9449 §5.2).
    tls_client_certificate_bound_access_tokens: bool = False
    dpop_bound_access_tokens: bool = False
    require_dpop_nonce: bool = False
    # A security profile to enforce: None or "fapi-ciba".
    profile: str | None = None


@dataclass(frozen=True)
class RegisteredClient:
    client: Client
    # The client secret in clear, for the operator to hand over once; None for private_key_jwt.
    secret: str | None


def public_jwk_set(value: Any) -> dict[str, Any]:
    """``value`` as a JWK set of public signature keys; a single JWK is wrapped.

    Raises ``ValueError`` naming the first problem found.
    """
    if isinstance(value, Mapping) and "keys" not in value and "kty" in value:
        value = {"keys": [dict(value)]}
    if not isinstance(value, Mapping) or not isinstance(value.get("keys"), list):
        raise ValueError('must be a JWK set: {"keys": [...]}')
    keys = value["keys"]
    if not keys:
        raise ValueError("the JWK set has no keys")
    for index, key in enumerate(keys):
        if not isinstance(key, Mapping):
            raise ValueError(f"key {index} is not a JSON object")
        if key.get("kty") not in _PUBLIC_KTY:
            raise ValueError(f"key {index}: kty must be one of EC, RSA, OKP")
        private = sorted(_PRIVATE_MEMBERS & key.keys())
        if private:
            raise ValueError(
                f"key {index} has private members ({', '.join(private)}): register public keys only"
            )
        if key.get("use", "sig") != "sig":
            raise ValueError(f"key {index}: use must be 'sig'")
    try:
        with warnings.catch_warnings():
            # joserfc warns about weak keys; a weak key is refused below instead.
            warnings.simplefilter("ignore")
            KeySet.import_key_set({"keys": [dict(k) for k in keys]})
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"not a valid JWK set: {exc or type(exc).__name__}") from None
    for index, key in enumerate(keys):
        if key["kty"] == "RSA" and _rsa_bits(key) < 2048:
            raise ValueError(f"key {index}: RSA keys must have at least 2048 bits")
    return {"keys": [dict(k) for k in keys]}


def _rsa_bits(key: Mapping[str, Any]) -> int:
    modulus = str(key.get("n", ""))
    raw = base64.urlsafe_b64decode(modulus + "=" * (-len(modulus) % 4))
    return len(raw.lstrip(b"\0")) * 8


def _url_problem(url: str, settings: Settings) -> str | None:
    """Why the server may not call ``url`` (its shape; the host is checked again when called)."""
    try:
        check_outbound_url(url, allow_insecure=settings.allow_insecure_urls)
    except UnsafeURL as exc:
        return str(exc)
    return None


def validate_registration(reg: ClientRegistration, settings: Settings) -> ClientRegistration:
    """Check every rule; return the registration with its JWK sets normalised.

    Raises :class:`RegistrationError` listing every problem.
    """
    problems: list[str] = []
    jwks: dict[str, Any] | None = None
    issuers: list[dict[str, Any]] = []

    if reg.client_id is not None and not _CLIENT_ID.match(reg.client_id):
        problems.append("client_id: 1 to 128 characters from A-Z a-z 0-9 . _ ~ -")
    if not reg.name.strip():
        problems.append("name: must not be empty")

    method = reg.token_endpoint_auth_method
    if method not in AUTH_METHODS:
        problems.append(f"token_endpoint_auth_method: one of {', '.join(AUTH_METHODS)}")
    if reg.jwks is not None and reg.jwks_uri is not None:
        problems.append("jwks and jwks_uri: give one, not both")
    if reg.jwks is not None:
        try:
            jwks = public_jwk_set(reg.jwks)
        except ValueError as exc:
            problems.append(f"jwks: {exc}")
    if reg.jwks_uri is not None:
        why = _url_problem(reg.jwks_uri, settings)
        if why:
            problems.append(f"jwks_uri: {why}")
    has_keys = reg.jwks is not None or reg.jwks_uri is not None
    if method == "private_key_jwt" and not has_keys:
        problems.append("private_key_jwt: needs the client's public keys (jwks or jwks_uri)")

    problems.extend(_mtls_problems(reg, has_keys))

    mode = reg.backchannel_token_delivery_mode
    endpoint = reg.backchannel_client_notification_endpoint
    if mode not in DELIVERY_MODES:
        problems.append(f"backchannel_token_delivery_mode: one of {', '.join(DELIVERY_MODES)}")
    elif mode in ("ping", "push"):
        if endpoint is None:
            problems.append(
                f"backchannel_client_notification_endpoint: required for {mode} mode (CIBA §4)"
            )
    elif endpoint is not None:
        problems.append(
            "backchannel_client_notification_endpoint: only ping and push clients use it"
        )
    if endpoint is not None:
        why = _url_problem(endpoint, settings)
        if why:
            problems.append(f"backchannel_client_notification_endpoint: {why}")

    unknown_grants = [g for g in reg.grant_types if g not in GRANT_TYPES]
    if unknown_grants:
        problems.append(
            f"grant_types: {', '.join(unknown_grants)} not supported "
            f"(supported: {', '.join(GRANT_TYPES)})"
        )
    if mode in ("poll", "ping") and CIBA_GRANT not in reg.grant_types:
        problems.append(f"grant_types: {mode} mode needs {CIBA_GRANT} (CIBA §4)")

    bad_types = [t for t in reg.authorization_details_types if not _DETAIL_TYPE.match(t)]
    if bad_types:
        problems.append(
            "authorization_details_types: not valid type names: " + ", ".join(map(repr, bad_types))
        )
    bad_scopes = [s for s in reg.scopes if not _SCOPE_TOKEN.match(s)]
    if bad_scopes:
        problems.append(f"scope: not valid scope tokens: {', '.join(map(repr, bad_scopes))}")
    if "openid" not in reg.scopes:
        problems.append("scope: must include openid")

    alg = reg.backchannel_authentication_request_signing_alg
    if alg is not None and alg not in REQUEST_OBJECT_ALGS_BY_REGISTRATION:
        problems.append(
            "backchannel_authentication_request_signing_alg: must be an asymmetric algorithm, "
            f"one of {', '.join(REQUEST_OBJECT_ALGS_BY_REGISTRATION)}"
        )
    if reg.require_signed_request and alg is None:
        problems.append(
            "require_signed_request: needs backchannel_authentication_request_signing_alg"
        )
    if alg is not None and not has_keys:
        problems.append(
            "backchannel_authentication_request_signing_alg: signed requests are verified "
            "against the client's keys; give jwks or jwks_uri"
        )
    if reg.id_token_signed_response_alg not in SIGNING_ALGS:
        problems.append(f"id_token_signed_response_alg: one of {', '.join(SIGNING_ALGS)}")

    for name, (low, high) in _TTL_BOUNDS.items():
        value = getattr(reg, name)
        if value is not None and not low <= value <= high:
            problems.append(f"{name}: must be between {low} and {high} seconds, got {value}")

    seen_issuers: set[str] = set()
    for entry in reg.login_hint_token_issuers:
        iss = str(entry.get("iss") or "")
        if not iss:
            problems.append("login_hint_token_issuers: an issuer has no iss")
            continue
        if iss in seen_issuers:
            problems.append(f"login_hint_token_issuers: {iss} given twice")
        seen_issuers.add(iss)
        try:
            issuers.append({"iss": iss, "jwks": public_jwk_set(entry.get("jwks"))})
        except ValueError as exc:
            problems.append(f"login_hint_token_issuers: {iss}: {exc}")

    if mode == "push" and (
        reg.dpop_bound_access_tokens or reg.tls_client_certificate_bound_access_tokens
    ):
        problems.append(
            "push mode: pushed tokens cannot be bound to a DPoP key or TLS certificate "
            "(the client never calls /token); use poll or ping"
        )
    if reg.profile is not None and reg.profile not in PROFILES:
        problems.append(f"profile: one of {', '.join(PROFILES)}")
    problems.extend(profile_problems(reg))

    if problems:
        raise RegistrationError(problems)
    return dataclasses.replace(reg, jwks=jwks, login_hint_token_issuers=tuple(issuers))


def _mtls_problems(reg: ClientRegistration, has_keys: bool) -> list[str]:
    """RFC 8705 §2: a tls_client_auth client registers exactly one subject value; a
    self_signed_tls_client_auth client, the keys its certificates carry."""
    problems = []
    subjects = {
        kind: getattr(reg, f"tls_client_auth_{kind}")
        for kind in SUBJECT_KINDS
        if getattr(reg, f"tls_client_auth_{kind}") is not None
    }
    for kind, value in subjects.items():
        why = check_subject_value(kind, value)
        if why:
            problems.append(f"tls_client_auth_{kind}: {why}")
    method = reg.token_endpoint_auth_method
    if method == "tls_client_auth" and len(subjects) != 1:
        problems.append(
            "tls_client_auth: register exactly one of tls_client_auth_subject_dn, "
            "tls_client_auth_san_dns, _san_uri, _san_ip, _san_email (RFC 8705 §2.1.2)"
        )
    if method != "tls_client_auth" and subjects:
        problems.append("tls_client_auth_*: only tls_client_auth clients register a subject")
    if method == "self_signed_tls_client_auth" and not has_keys:
        problems.append(
            "self_signed_tls_client_auth: needs the certificates' public keys (jwks or jwks_uri)"
        )
    if reg.require_dpop_nonce and not reg.dpop_bound_access_tokens:
        problems.append("require_dpop_nonce: needs dpop_bound_access_tokens")
    return problems


async def check_notification_host(reg: ClientRegistration, settings: Settings) -> None:
    """Refuse a notification endpoint whose host resolves to a loopback, private,
    link-local or other non-public address (unless insecure URLs are allowed). A name
    that does not resolve yet is accepted: the address is checked again at every
    send, and this only catches a mistake early."""
    endpoint = reg.backchannel_client_notification_endpoint
    if endpoint is None or settings.allow_insecure_urls:
        return
    host = (urlsplit(endpoint).hostname or "").rstrip(".")
    try:
        await resolve_public_addresses(host, allow_insecure=False)
    except Unresolvable:
        return
    except UnsafeURL as exc:
        raise RegistrationError([f"backchannel_client_notification_endpoint: {exc}"]) from None


async def register_client(
    conn: asyncpg.Connection,
    reg: ClientRegistration,
    settings: Settings,
    *,
    actor: str = "operator",
) -> RegisteredClient:
    """Validate and store a new client; the secret (if any) is returned only here."""
    reg = validate_registration(reg, settings)
    await check_notification_host(reg, settings)
    secret = new_secret() if reg.token_endpoint_auth_method in SECRET_AUTH_METHODS else None
    return await store_client(conn, reg, secret, actor=actor)


async def store_client(
    conn: asyncpg.Connection,
    reg: ClientRegistration,
    secret: str | None,
    *,
    actor: str = "operator",
) -> RegisteredClient:
    """Insert an already validated registration with the given secret, and announce it;
    audited ``client_created`` with its metadata (never the secret)."""
    client_id = reg.client_id or new_identifier()
    client = Client(
        client_id=client_id,
        secret_hash=hash_secret(secret) if secret is not None else None,
        token_endpoint_auth_method=reg.token_endpoint_auth_method,
        **_registered_fields(reg),
    )
    try:
        async with conn.transaction():
            stored = await insert_client(conn, client)
            await notify(conn, CONFIG_CHANNEL, f"client:{client_id}")
            await insert_audit_event(
                conn,
                "client_created",
                client_id=client_id,
                detail={"actor": actor, "metadata": stored.public_metadata()},
            )
    except asyncpg.UniqueViolationError:
        raise RegistrationError([f"client_id: {client_id} is already registered"]) from None
    return RegisteredClient(stored, secret)


# What `client update` may change, as ClientRegistration fields.
UPDATABLE = (
    "name",
    "jwks",
    "jwks_uri",
    "backchannel_token_delivery_mode",
    "backchannel_client_notification_endpoint",
    "scopes",
    "grant_types",
    "backchannel_authentication_request_signing_alg",
    "require_signed_request",
    "backchannel_user_code_parameter",
    "id_token_signed_response_alg",
    "access_token_ttl",
    "refresh_token_ttl",
    "max_requested_expiry",
    "login_hint_token_issuers",
    "may_enrol_users",
    "number_matching",
    "authorization_details_types",
    *SENDER_CONSTRAINT_FIELDS,
)


def registration_of(client: Client) -> ClientRegistration:
    """A stored client's metadata as a registration, to validate a change against."""
    return ClientRegistration(
        name=client.name,
        client_id=client.client_id,
        token_endpoint_auth_method=client.token_endpoint_auth_method,
        jwks=client.jwks,
        jwks_uri=client.jwks_uri,
        backchannel_token_delivery_mode=client.backchannel_token_delivery_mode,
        backchannel_client_notification_endpoint=client.backchannel_client_notification_endpoint,
        scopes=client.scopes,
        grant_types=client.grant_types,
        backchannel_authentication_request_signing_alg=(
            client.backchannel_authentication_request_signing_alg
        ),
        require_signed_request=client.require_signed_request,
        backchannel_user_code_parameter=client.backchannel_user_code_parameter,
        id_token_signed_response_alg=client.id_token_signed_response_alg,
        access_token_ttl=client.access_token_ttl,
        refresh_token_ttl=client.refresh_token_ttl,
        max_requested_expiry=client.max_requested_expiry,
        login_hint_token_issuers=client.login_hint_token_issuers,
        may_enrol_users=client.may_enrol_users,
        number_matching=client.number_matching,
        authorization_details_types=client.authorization_details_types,
        **{name: getattr(client, name) for name in SENDER_CONSTRAINT_FIELDS},
    )


async def update_client(
    conn: asyncpg.Connection,
    client_id: str,
    changes: Mapping[str, Any],
    settings: Settings,
    *,
    actor: str = "operator",
) -> Client | None:
    """Change a client's metadata, validated as a whole as at registration; ``None`` if
    there is no such client. Every replica drops its cached copy; audited
    ``client_updated`` with each changed field's value before and after."""
    unknown = sorted(set(changes) - set(UPDATABLE))
    if unknown:
        raise RegistrationError([f"{name}: cannot be changed" for name in unknown])
    async with conn.transaction():
        current = await select_client_for_update(conn, client_id)
        if current is None:
            return None
        before = registration_of(current)
        reg = validate_registration(dataclasses.replace(before, **changes), settings)
        await check_notification_host(reg, settings)
        changed = {
            name: {
                "before": _audit_value(getattr(before, name)),
                "after": _audit_value(getattr(reg, name)),
            }
            for name in UPDATABLE
            if getattr(before, name) != getattr(reg, name)
        }
        updated = await update_client_registration(conn, _client_of(reg, current))
        assert updated is not None
        await notify(conn, CONFIG_CHANNEL, f"client:{client_id}")
        await insert_audit_event(
            conn, "client_updated", client_id=client_id, detail={"actor": actor, "changed": changed}
        )
    return updated


def _client_of(reg: ClientRegistration, current: Client) -> Client:
    return dataclasses.replace(current, **_registered_fields(reg))


def _registered_fields(reg: ClientRegistration) -> dict[str, Any]:
    """The client's fields a registration sets, normalised (at create and at update)."""
    return dict(
        name=reg.name.strip(),
        jwks=dict(reg.jwks) if reg.jwks is not None else None,
        jwks_uri=reg.jwks_uri,
        grant_types=tuple(dict.fromkeys(reg.grant_types)),
        scopes=tuple(dict.fromkeys(reg.scopes)),
        backchannel_token_delivery_mode=reg.backchannel_token_delivery_mode,
        backchannel_client_notification_endpoint=reg.backchannel_client_notification_endpoint,
        backchannel_authentication_request_signing_alg=(
            reg.backchannel_authentication_request_signing_alg
        ),
        require_signed_request=reg.require_signed_request,
        backchannel_user_code_parameter=reg.backchannel_user_code_parameter,
        id_token_signed_response_alg=reg.id_token_signed_response_alg,
        access_token_ttl=reg.access_token_ttl,
        refresh_token_ttl=reg.refresh_token_ttl,
        max_requested_expiry=reg.max_requested_expiry,
        login_hint_token_issuers=tuple(dict(i) for i in reg.login_hint_token_issuers),
        may_enrol_users=reg.may_enrol_users,
        number_matching=reg.number_matching,
        authorization_details_types=tuple(dict.fromkeys(reg.authorization_details_types)),
        **{name: getattr(reg, name) for name in SENDER_CONSTRAINT_FIELDS},
    )


def _audit_value(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_audit_value(v) for v in value]
    if isinstance(value, Mapping):
        return dict(value)
    return value


async def set_client_disabled(
    conn: asyncpg.Connection, client_id: str, disabled: bool, *, actor: str = "operator"
) -> Client | None:
    """Disable or re-enable a client; ``None`` if there is no such client. Audited
    ``client_disabled`` / ``client_enabled``."""
    async with conn.transaction():
        client = await update_client_disabled(conn, client_id, disabled)
        if client is not None:
            await notify(conn, CONFIG_CHANNEL, f"client:{client_id}")
            event = "client_disabled" if disabled else "client_enabled"
            await insert_audit_event(conn, event, client_id=client_id, detail={"actor": actor})
    return client
