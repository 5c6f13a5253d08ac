"""A client library for relying parties of a CIBA provider (OpenID Connect CIBA Core 1.0).

It needs only aiohttp, joserfc and the standard library, and imports nothing
of the backchannel server. Start with :class:`CibaClient` (async) or
:class:`SyncCibaClient` (blocking); docs/relying-parties.md shows both.

    async with CibaClient(issuer, ClientSecretBasic(client_id, secret)) as client:
        started = await client.start(login_hint="alice@example.com", binding_message="Order 4711")
        tokens = await client.wait(started)
"""

from __future__ import annotations

from backchannel.rp.authentication_request import AuthenticationStarted
from backchannel.rp.client import CibaClient
from backchannel.rp.client_auth import (
    ClientAuth,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
)
from backchannel.rp.clock import Clock
from backchannel.rp.discovery import ProviderMetadata
from backchannel.rp.errors import (
    AccessDenied,
    ExpiredToken,
    InvalidClient,
    InvalidGrant,
    InvalidIdToken,
    OAuthError,
    ProtocolError,
    ReportedNotMe,
    RPError,
    TransactionFailed,
    TransportError,
    UsageError,
)
from backchannel.rp.receiver import (
    Notification,
    NotificationReceiver,
    PingNotification,
    PushedError,
    PushedTokens,
    aiohttp_notification_handler,
    starlette_notification_endpoint,
)
from backchannel.rp.sync import SyncCibaClient
from backchannel.rp.tokens import TokenResponse

__all__ = [
    "AccessDenied",
    "AuthenticationStarted",
    "CibaClient",
    "ClientAuth",
    "ClientSecretBasic",
    "ClientSecretPost",
    "Clock",
    "ExpiredToken",
    "InvalidClient",
    "InvalidGrant",
    "InvalidIdToken",
    "Notification",
    "NotificationReceiver",
    "OAuthError",
    "PingNotification",
    "PrivateKeyJwt",
    "ProtocolError",
    "ProviderMetadata",
    "PushedError",
    "PushedTokens",
    "RPError",
    "ReportedNotMe",
    "SyncCibaClient",
    "TokenResponse",
    "TransactionFailed",
    "TransportError",
    "UsageError",
    "aiohttp_notification_handler",
    "starlette_notification_endpoint",
]
