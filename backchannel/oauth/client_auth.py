"""Client authentication at the token and backchannel endpoints (RFC 6749 §2.3, RFC 7523 §3).

Five methods: ``client_secret_basic``, ``client_secret_post``,
``private_key_jwt``, and the mutual-TLS methods of RFC 8705 §2,
``tls_client_auth`` (a certificate from a trusted CA, with the registered
subject) and ``self_signed_tls_client_auth`` (a certificate whose public key is
one of the client's registered keys). A client presents exactly one, and only
the one it registered. A client using mutual TLS names itself with the
``client_id`` parameter. Secret checks cost no database round trip for a
cached client. A client under the FAPI-CIBA profile may only use the methods
that profile allows.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from backchannel.db.clients import Client
from backchannel.errors import InvalidClient, InvalidRequest
from backchannel.oauth.algorithms import CLIENT_ASSERTION_ALGS
from backchannel.oauth.client_certificates import (
    SUBJECT_KINDS,
    CertificateRejected,
    ClientCertificate,
    RegisteredSubject,
    key_in_key_set,
    subject_matches,
)
from backchannel.oauth.fapi_ciba import check_client_auth_method
from backchannel.oauth.jwt_claims import (
    MAX_JTI_LENGTH,
    JWTRejected,
    check_audience,
    check_times,
    peek_claims,
    read_header,
    record_first_use,
    string_claim,
)
from backchannel.oauth.remote_jwks import client_key_set, verify_client_jwt
from backchannel.oauth.secrets import hash_secret, secret_matches
from backchannel.oauth.services import Services

log = logging.getLogger(__name__)

CLIENT_AUTH_PARAMS: frozenset[str] = frozenset(
    {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
)
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="backchannel"'}
# A client assertion may not be valid for longer than this (seconds from now).
MAX_ASSERTION_LIFETIME = 3600
MAX_CLIENT_ID_LENGTH = 256
JTI_PURPOSE = "client_assertion"

_FAILED = "client authentication failed"
# Compared against when the client is unknown, so that both cases take as long.
_DUMMY_HASH = hash_secret("not a client secret")


TLS_AUTH_METHODS: tuple[str, ...] = ("tls_client_auth", "self_signed_tls_client_auth")


async def authenticate_client(
    services: Services,
    form: Mapping[str, str],
    authorization: str | None,
    endpoint_url: str,
    certificate: ClientCertificate | None = None,
) -> Client:
    """The client that authenticated this request, or :class:`InvalidClient`.

    ``certificate`` is the client's TLS certificate, when the request came with one.
    """
    basic = _basic_scheme(authorization)
    try:
        client = await _authenticate(
            services, form, authorization if basic else None, endpoint_url, certificate
        )
        check_client_auth_method(client)
        return client
    except InvalidClient as exc:
        if basic:
            exc.headers.update(BASIC_CHALLENGE)
        raise


def _basic_scheme(authorization: str | None) -> bool:
    return authorization is not None and authorization.strip().partition(" ")[0].lower() == "basic"


async def _authenticate(
    services: Services,
    form: Mapping[str, str],
    basic: str | None,
    endpoint_url: str,
    certificate: ClientCertificate | None,
) -> Client:
    uses_post = "client_secret" in form
    uses_jwt = "client_assertion" in form or "client_assertion_type" in form
    if (basic is not None) + uses_post + uses_jwt > 1:
        raise InvalidRequest("more than one client authentication method was used")
    form_client_id = form.get("client_id")
    if basic is not None:
        client_id, secret = parse_basic_credentials(basic)
        _same_client_id(form_client_id, client_id)
        return await _check_secret(services, client_id, secret, "client_secret_basic")
    if uses_post:
        if form_client_id is None:
            raise InvalidRequest("client_secret was sent without client_id")
        return await _check_secret(
            services, form_client_id, form["client_secret"], "client_secret_post"
        )
    if uses_jwt:
        return await _check_assertion(services, form, endpoint_url)
    if form_client_id is not None and certificate is not None:
        return await _check_certificate(services, form_client_id, certificate)
    if form_client_id is not None:
        client = await _lookup(services, form_client_id)
        if client is not None and client.token_endpoint_auth_method in TLS_AUTH_METHODS:
            raise InvalidClient("this client authenticates with a TLS client certificate")
    raise InvalidClient("client authentication is required")


def parse_basic_credentials(authorization: str) -> tuple[str, str]:
    """RFC 6749 §2.3.1: base64 of form-urlencoded ``client_id:client_secret``."""
    _scheme, _, encoded = authorization.strip().partition(" ")
    try:
        raw = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except ValueError:  # binascii.Error, UnicodeDecodeError, or non-ASCII header text
        raise InvalidClient("malformed Basic credentials") from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    try:
        client_id = unquote_plus(user, errors="strict")
        secret = unquote_plus(password, errors="strict")
    except UnicodeDecodeError:
        raise InvalidClient("malformed Basic credentials") from None
    if not client_id or not secret or "\x00" in client_id + secret:
        raise InvalidClient("malformed Basic credentials")
    return client_id, secret


def _same_client_id(form_client_id: str | None, authenticated_id: str) -> None:
    if form_client_id is not None and form_client_id != authenticated_id:
        raise InvalidRequest("client_id does not match the client authentication")


async def _lookup(services: Services, client_id: str) -> Client | None:
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        return None
    client = await services.clients.get(client_id)
    if client is None or client.disabled:
        return None
    return client


async def _check_secret(services: Services, client_id: str, secret: str, method: str) -> Client:
    client = await _lookup(services, client_id)
    stored = client.secret_hash if client is not None else _DUMMY_HASH
    matches = secret_matches(secret, stored)
    if client is None or not matches or client.token_endpoint_auth_method != method:
        raise InvalidClient(_FAILED)
    return client


async def _check_certificate(
    services: Services, client_id: str, certificate: ClientCertificate
) -> Client:
    """RFC 8705 §2.1 (PKI) and §2.2 (self-signed) mutual-TLS client authentication."""
    client = await _lookup(services, client_id)
    if client is None or client.token_endpoint_auth_method not in TLS_AUTH_METHODS:
        raise InvalidClient(_FAILED)
    if client.token_endpoint_auth_method == "self_signed_tls_client_auth":
        try:
            matches = key_in_key_set(certificate, await client_key_set(services, client))
            if not matches and client.jwks_uri is not None:
                keys = await client_key_set(services, client, refresh=True)
                matches = key_in_key_set(certificate, keys)
        except JWTRejected as exc:
            raise InvalidClient(f"the client's keys are unavailable: {exc}") from None
        if not matches:
            raise InvalidClient("the client certificate's key is not one of the client's keys")
        return client
    authorities = services.client_authorities
    if authorities is None:
        log.warning("tls_client_auth by %s, but TLS_CLIENT_CA_FILE is not set", client_id)
        raise InvalidClient("tls_client_auth is not available on this server")
    try:
        authorities.verify(certificate)
    except CertificateRejected as exc:
        raise InvalidClient(str(exc)) from None
    expected = registered_subject(client)
    if expected is None or not subject_matches(certificate, expected):
        raise InvalidClient("the client certificate does not carry the registered subject")
    return client


def registered_subject(client: Client) -> RegisteredSubject | None:
    """The one subject value a tls_client_auth client registered."""
    for kind in SUBJECT_KINDS:
        value = getattr(client, f"tls_client_auth_{kind}")
        if value is not None:
            return RegisteredSubject(kind, value)
    return None


async def _check_assertion(
    services: Services, form: Mapping[str, str], endpoint_url: str
) -> Client:
    """RFC 7523 §3 and §2.2, as OIDC Core §9 uses them for ``private_key_jwt``."""
    assertion = form.get("client_assertion")
    assertion_type = form.get("client_assertion_type")
    if assertion is None or assertion_type is None:
        raise InvalidRequest("client_assertion and client_assertion_type must be sent together")
    if assertion_type != JWT_BEARER:
        raise InvalidClient("unsupported client_assertion_type")
    try:
        alg = read_header(assertion)["alg"]
        if alg not in CLIENT_ASSERTION_ALGS:
            raise JWTRejected(f"signing algorithm {alg} is not allowed")
        unverified = peek_claims(assertion)
    except JWTRejected as exc:
        raise InvalidClient(f"client assertion refused: {exc}") from None
    subject = unverified.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidClient("client assertion refused: the sub claim is required")
    _same_client_id(form.get("client_id"), subject)
    client = await _lookup(services, subject)
    if client is None or client.token_endpoint_auth_method != "private_key_jwt":
        raise InvalidClient(_FAILED)
    try:
        claims = await verify_client_jwt(services, client, assertion, CLIENT_ASSERTION_ALGS)
        _check_assertion_claims(services, client, claims, endpoint_url)
    except JWTRejected as exc:
        raise InvalidClient(f"client assertion refused: {exc}") from None
    fresh = await record_first_use(
        services.pool,
        claims,
        issuer=client.client_id,
        purpose=JTI_PURPOSE,
        skew=services.settings.clock_skew,
    )
    if not fresh:
        raise InvalidClient("client assertion refused: it was already used")
    return client


def _check_assertion_claims(
    services: Services, client: Client, claims: dict[str, Any], endpoint_url: str
) -> None:
    settings = services.settings
    if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
        raise JWTRejected("iss and sub must both be the client_id")
    check_audience(claims, {settings.issuer, endpoint_url, settings.token_endpoint})
    check_times(
        claims,
        skew=settings.clock_skew,
        require=("exp",),
        max_ahead=MAX_ASSERTION_LIFETIME,
    )
    string_claim(claims, "jti", max_length=MAX_JTI_LENGTH)
