"""Service configuration: the only module that reads the environment.

Every setting has an environment variable ``BACKCHANNEL_<NAME>`` and may also
come from a TOML file named by ``BACKCHANNEL_CONFIG_FILE`` (keys are the
lower-case names below). The environment wins over the file. Values are
validated once, at start, and every bad value is reported together.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from backchannel.key_wrapping import parse_kek

ENV_PREFIX = "BACKCHANNEL_"


class SettingsError(ValueError):
    """One or more configuration values are invalid; the message lists each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _bounded(low: int, high: int) -> dict[str, Any]:
    return {"low": low, "high": high}


@dataclass(frozen=True)
class Settings:
    """Validated settings. Durations are seconds, sizes are bytes or characters."""

    issuer: str = "http://127.0.0.1:8000"
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=_bounded(0, 65535))
    data_dir: Path = Path(".backchannel")
    db_pool_min: int = field(default=2, metadata=_bounded(1, 1000))
    db_pool_max: int = field(default=10, metadata=_bounded(1, 1000))
    # Seconds a request waits for a pooled connection, and for one statement's answer,
    # before it is answered 503 (a frozen or overloaded database).
    db_acquire_timeout: float = field(default=5.0, metadata=_bounded(1, 300))
    db_statement_timeout: float = field(default=10.0, metadata=_bounded(1, 300))
    # Seconds between /readyz turning unready at shutdown and held polls being answered.
    shutdown_delay: int = field(default=0, metadata=_bounded(0, 60))
    # serve and dev: "auto" (uvloop when installed, else asyncio), "uvloop" or "asyncio".
    event_loop: str = "auto"

    # /bc-authorize
    binding_message_max_length: int = field(default=128, metadata=_bounded(1, 4096))
    default_request_expiry: int = field(default=300, metadata=_bounded(10, 86400))
    max_request_expiry: int = field(default=1800, metadata=_bounded(10, 86400))
    request_object_max_lifetime: int = field(default=3600, metadata=_bounded(60, 86400))
    clock_skew: int = field(default=10, metadata=_bounded(0, 300))
    max_body_bytes: int = field(default=65536, metadata=_bounded(1024, 10 * 1024 * 1024))

    # /token polling
    poll_interval: int = field(default=5, metadata=_bounded(1, 60))
    poll_interval_max: int = field(default=60, metadata=_bounded(1, 600))
    poll_grace_ms: int = field(default=500, metadata=_bounded(0, 5000))
    poll_lock_after: int = field(default=8, metadata=_bounded(1, 10000))
    poll_lock_seconds: int = field(default=10, metadata=_bounded(1, 3600))
    poll_deny_after: int = field(default=100, metadata=_bounded(2, 100000))
    long_poll_max: int = field(default=30, metadata=_bounded(0, 60))

    # tokens
    access_token_ttl: int = field(default=300, metadata=_bounded(30, 86400))
    id_token_ttl: int = field(default=300, metadata=_bounded(30, 86400))
    refresh_token_ttl: int = field(default=28800, metadata=_bounded(60, 90 * 86400))
    # However often it is rotated, a refresh token family ends this long after auth_time.
    refresh_token_max_age: int = field(default=86400, metadata=_bounded(300, 365 * 86400))
    key_retire_after: int = field(default=86400, metadata=_bounded(60, 365 * 86400))
    # 32 random bytes, base64url: wraps private signing and VAPID keys at rest.
    key_encryption_key: str | None = field(default=None, repr=False)
    # Former key-encryption keys, only to unwrap until `backchannel keys wrap` has rewrapped.
    key_encryption_keys_previous: tuple[str, ...] = field(default=(), repr=False)

    # sender-constrained tokens: DPoP (RFC 9449) and mutual TLS (RFC 8705)
    # How far a DPoP proof's iat may be from the server's clock, either way.
    dpop_proof_max_age: int = field(default=60, metadata=_bounded(5, 300))
    # Every DPoP proof must carry a server nonce, whatever the client registered.
    dpop_nonce_required: bool = False
    # Peers (CIDRs) whose CLIENT_CERT_HEADER is believed: the TLS-terminating proxies.
    trusted_proxies: tuple[str, ...] = ()
    # The header such a proxy puts the client's certificate in (URL-encoded PEM).
    client_cert_header: str = "X-Client-Cert"
    # PEM file of the CAs whose certificates authenticate tls_client_auth clients.
    tls_client_ca_file: str | None = None
    # Base URL of the endpoints for mutual TLS (mtls_endpoint_aliases); unset: the issuer.
    mtls_base_url: str | None = None

    # user codes (CIBA §7.1 user_code; backchannel/oauth/user_codes.py)
    user_code_max_failures: int = field(default=5, metadata=_bounded(1, 1000))
    user_code_lock_seconds: int = field(default=900, metadata=_bounded(10, 7 * 86400))
    user_code_client_max_failures: int = field(default=50, metadata=_bounded(1, 100000))
    user_code_failure_window: int = field(default=900, metadata=_bounded(10, 7 * 86400))

    # push authenticator (docs/device-api.md)
    enrolment_code_ttl: int = field(default=600, metadata=_bounded(60, 86400))
    # How far a device-signed call's iat may be from now (the contract caps it at 2 minutes).
    device_clock_skew: int = field(default=60, metadata=_bounded(5, 120))
    # WebAuthn user verification (docs/device-api.md): "none" accepts any authenticator;
    # "direct" demands an attestation chaining to webauthn_attestation_roots (a PEM file),
    # from one of webauthn_allowed_aaguids when that list is not empty.
    webauthn_attestation: str = "none"
    webauthn_attestation_roots: str | None = None
    webauthn_allowed_aaguids: tuple[str, ...] = field(default=(), metadata={"lower": True})

    # push fatigue and "this wasn't me" (docs/policy.md); 0 turns a limit off
    fatigue_max_pending: int = field(default=3, metadata=_bounded(0, 1000))
    fatigue_max_prompts: int = field(default=10, metadata=_bounded(0, 100000))
    fatigue_window: int = field(default=600, metadata=_bounded(1, 86400))
    not_me_mute: int = field(default=1800, metadata=_bounded(0, 7 * 86400))
    not_me_suspend_after: int = field(default=3, metadata=_bounded(0, 10000))
    not_me_suspend_window: int = field(default=86400, metadata=_bounded(60, 30 * 86400))

    # outbound HTTP (jwks_uri, notifications, push)
    allow_insecure_urls: bool = False
    http_timeout: float = 5.0

    # Web Push delivery (backchannel/delivery/)
    # VAPID "sub" claim (RFC 8292 §2.1): how push services reach the operator.
    vapid_subject: str = "mailto:security@example.com"
    # Push service hosts a subscription endpoint may name ("*.example.com" = any name below).
    push_allowed_hosts: tuple[str, ...] = field(
        default=(
            "*.push.apple.com",
            "web.push.apple.com",
            "fcm.googleapis.com",
            "updates.push.services.mozilla.com",
            "*.notify.windows.com",
        ),
        metadata={"lower": True},  # host names compare case-insensitively
    )
    # Dev/test only: also accept http(s) endpoints on 127.0.0.1, ::1 and localhost.
    push_allow_loopback: bool = False
    push_timeout: float = 10.0
    push_max_attempts: int = field(default=10, metadata=_bounded(1, 100))
    outbox_batch_size: int = field(default=50, metadata=_bounded(1, 1000))

    # ping and push token delivery to client notification endpoints (CIBA §10.2, §10.3)
    notification_timeout: float = field(default=10.0, metadata=_bounded(1, 120))
    # A notification still failing this long after its request ended is given up.
    notification_give_up_after: int = field(default=600, metadata=_bounded(10, 86400))
    # Notifications one replica sends to one client at a time, so a slow client waits alone.
    notification_per_client: int = field(default=16, metadata=_bounded(1, 100))
    notification_batch_size: int = field(default=50, metadata=_bounded(1, 1000))

    # How often the push and notification workers look for due messages unwoken; a
    # NOTIFY from the statement that queues a message wakes them at once.
    delivery_poll_interval: float = field(default=1.0, metadata=_bounded(1, 600))

    # housekeeping (backchannel/housekeeping.py)
    housekeeping_interval: int = field(default=300, metadata=_bounded(10, 86400))
    push_outbox_retention: int = field(default=86400, metadata=_bounded(0, 90 * 86400))
    notification_retention: int = field(default=86400, metadata=_bounded(0, 90 * 86400))

    log_level: str = "INFO"
    # "json" (one object per line) or "text", for serve; dev writes text unless this is set.
    log_format: str = "json"
    # One log line per HTTP request (not health probes at INFO); dev turns it on unless set.
    access_log: bool = False
    # Bearer token GET /metrics requires; unset: /metrics answers loopback callers only.
    metrics_token: str | None = field(default=None, repr=False)

    # Not a setting: the names from_env found in the environment or the file, so that
    # `dev` can choose its own defaults (issuer, log format) where the operator chose none.
    given: frozenset[str] = field(
        default=frozenset(), repr=False, compare=False, metadata={"internal": True}
    )

    @property
    def token_endpoint(self) -> str:
        return self.issuer + "/token"

    @property
    def backchannel_endpoint(self) -> str:
        return self.issuer + "/bc-authorize"

    @property
    def jwks_uri(self) -> str:
        return self.issuer + "/jwks"

    @property
    def userinfo_endpoint(self) -> str:
        return self.issuer + "/userinfo"

    @property
    def revocation_endpoint(self) -> str:
        return self.issuer + "/revoke"

    @property
    def introspection_endpoint(self) -> str:
        return self.issuer + "/introspect"

    @property
    def issuer_origin(self) -> str:
        """The issuer's origin (scheme, host, port): the WebAuthn origin of the app."""
        parts = urlsplit(self.issuer)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def webauthn_rp_id(self) -> str | None:
        """The WebAuthn RP ID, the issuer's host; None for an IP address, which
        browsers refuse as an RP ID."""
        host = urlsplit(self.issuer).hostname
        if not host:
            return None
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return host
        return None

    @property
    def mtls_base(self) -> str:
        return self.mtls_base_url or self.issuer

    def mtls_endpoint_aliases(self) -> dict[str, str]:
        """RFC 8705 §5: where clients using mutual TLS reach each endpoint."""
        base = self.mtls_base
        return {
            "token_endpoint": base + "/token",
            "backchannel_authentication_endpoint": base + "/bc-authorize",
            "userinfo_endpoint": base + "/userinfo",
            "revocation_endpoint": base + "/revoke",
            "introspection_endpoint": base + "/introspect",
        }

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) and the optional TOML file."""
        env = os.environ if environ is None else environ
        raw: dict[str, Any] = {}
        problems: list[str] = []
        config_file = env.get(ENV_PREFIX + "CONFIG_FILE")
        if config_file:
            try:
                raw.update(tomllib.loads(Path(config_file).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as exc:
                problems.append(f"{ENV_PREFIX}CONFIG_FILE={config_file}: {exc}")
        known = {f.name for f in settings_fields()}
        for name in raw:
            if name not in known:
                problems.append(f"{config_file}: unknown setting {name!r}")
        for f in settings_fields():
            value = env.get(ENV_PREFIX + f.name.upper())
            if value is not None:
                raw[f.name] = value
        values: dict[str, Any] = {}
        for f in settings_fields():
            if f.name not in raw:
                continue
            try:
                values[f.name] = _convert(f, raw[f.name])
            except ValueError as exc:
                problems.append(f"{ENV_PREFIX}{f.name.upper()}: {exc}")
        if problems:
            raise SettingsError(problems)
        settings = cls(**values, given=frozenset(values))
        settings.validate()
        return settings

    def is_given(self, name: str) -> bool:
        """Whether the setting ``name`` was set (environment or file), not left at its default."""
        return name in self.given

    def validate(self) -> None:
        """Check cross-field rules; raise :class:`SettingsError` listing every problem."""
        problems: list[str] = []
        parts = urlsplit(self.issuer)
        if parts.scheme not in ("https", "http") or not parts.netloc:
            problems.append(
                f"{ENV_PREFIX}ISSUER: must be an absolute http(s) URL, got {self.issuer!r}"
            )
        elif parts.query or parts.fragment or self.issuer.endswith("/"):
            problems.append(f"{ENV_PREFIX}ISSUER: must have no query, fragment or trailing slash")
        elif (
            parts.scheme == "http"
            and parts.hostname not in ("127.0.0.1", "localhost", "::1")
            and not self.allow_insecure_urls
        ):
            problems.append(
                f"{ENV_PREFIX}ISSUER: http is only allowed for loopback hosts "
                f"(or set {ENV_PREFIX}ALLOW_INSECURE_URLS=true)"
            )
        if self.database_url is not None and not self.database_url.startswith(
            ("postgresql://", "postgres://")
        ):
            problems.append(f"{ENV_PREFIX}DATABASE_URL: must be a postgresql:// URL")
        if self.db_pool_min > self.db_pool_max:
            problems.append(f"{ENV_PREFIX}DB_POOL_MIN: must not exceed DB_POOL_MAX")
        if self.default_request_expiry > self.max_request_expiry:
            problems.append(
                f"{ENV_PREFIX}DEFAULT_REQUEST_EXPIRY: must not exceed MAX_REQUEST_EXPIRY"
            )
        if self.poll_interval > self.poll_interval_max:
            problems.append(f"{ENV_PREFIX}POLL_INTERVAL: must not exceed POLL_INTERVAL_MAX")
        if self.poll_lock_after >= self.poll_deny_after:
            problems.append(f"{ENV_PREFIX}POLL_LOCK_AFTER: must be below POLL_DENY_AFTER")
        if not 0 < self.http_timeout <= 60:
            problems.append(f"{ENV_PREFIX}HTTP_TIMEOUT: must be in (0, 60]")
        if self.key_encryption_key is not None:
            try:
                parse_kek(self.key_encryption_key)
            except ValueError as exc:
                problems.append(f"{ENV_PREFIX}KEY_ENCRYPTION_KEY: {exc}")
        for text in self.key_encryption_keys_previous:
            try:
                parse_kek(text)
            except ValueError as exc:
                problems.append(f"{ENV_PREFIX}KEY_ENCRYPTION_KEYS_PREVIOUS: {exc}")
        if self.key_encryption_keys_previous and not self.key_encryption_key:
            problems.append(
                f"{ENV_PREFIX}KEY_ENCRYPTION_KEYS_PREVIOUS: needs {ENV_PREFIX}KEY_ENCRYPTION_KEY"
            )
        problems.extend(self._push_problems())
        problems.extend(self._webauthn_problems())
        problems.extend(self._mtls_problems())
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"{ENV_PREFIX}LOG_LEVEL: one of DEBUG, INFO, WARNING, ERROR")
        if self.event_loop not in ("auto", "uvloop", "asyncio"):
            problems.append(f"{ENV_PREFIX}EVENT_LOOP: one of auto, uvloop, asyncio")
        if self.log_format not in ("json", "text"):
            problems.append(f"{ENV_PREFIX}LOG_FORMAT: one of json, text")
        if self.metrics_token is not None and not _METRICS_TOKEN.fullmatch(self.metrics_token):
            problems.append(
                f"{ENV_PREFIX}METRICS_TOKEN: at least 16 visible ASCII characters, no spaces"
            )
        if problems:
            raise SettingsError(problems)

    def _webauthn_problems(self) -> list[str]:
        problems: list[str] = []
        name = f"{ENV_PREFIX}WEBAUTHN_"
        if self.webauthn_attestation not in ("none", "direct"):
            problems.append(f"{name}ATTESTATION: one of none, direct")
        for aaguid in self.webauthn_allowed_aaguids:
            try:
                uuid.UUID(aaguid)
            except ValueError:
                problems.append(f"{name}ALLOWED_AAGUIDS: {aaguid!r} is not an AAGUID (a UUID)")
        if self.webauthn_allowed_aaguids and self.webauthn_attestation != "direct":
            # Without a verified attestation, an AAGUID is whatever the authenticator says.
            problems.append(f"{name}ALLOWED_AAGUIDS: needs {name}ATTESTATION=direct")
        if self.webauthn_attestation == "direct":
            if not self.webauthn_attestation_roots:
                problems.append(
                    f"{name}ATTESTATION_ROOTS: direct attestation needs the trusted root "
                    "certificates (a PEM file)"
                )
            else:
                try:
                    text = Path(self.webauthn_attestation_roots).read_text()
                except OSError as exc:
                    problems.append(f"{name}ATTESTATION_ROOTS: {exc}")
                else:
                    if "-----BEGIN CERTIFICATE-----" not in text:
                        problems.append(f"{name}ATTESTATION_ROOTS: no PEM certificate in the file")
        elif self.webauthn_attestation_roots:
            problems.append(f"{name}ATTESTATION_ROOTS: only used with {name}ATTESTATION=direct")
        return problems

    def _mtls_problems(self) -> list[str]:
        problems: list[str] = []
        for cidr in self.trusted_proxies:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                problems.append(f"{ENV_PREFIX}TRUSTED_PROXIES: {cidr!r} is not an address or CIDR")
        if not _HEADER_NAME.fullmatch(self.client_cert_header):
            problems.append(f"{ENV_PREFIX}CLIENT_CERT_HEADER: not an HTTP header name")
        if self.tls_client_ca_file is not None and not Path(self.tls_client_ca_file).is_file():
            problems.append(f"{ENV_PREFIX}TLS_CLIENT_CA_FILE: no such file")
        if self.mtls_base_url is not None:
            parts = urlsplit(self.mtls_base_url)
            if (
                parts.scheme not in ("https", "http")
                or not parts.netloc
                or parts.query
                or parts.fragment
                or self.mtls_base_url.endswith("/")
            ):
                problems.append(
                    f"{ENV_PREFIX}MTLS_BASE_URL: an absolute URL without query, fragment "
                    "or trailing slash"
                )
        return problems

    def _push_problems(self) -> list[str]:
        problems: list[str] = []
        if not _VAPID_SUBJECT.fullmatch(self.vapid_subject):
            problems.append(
                f"{ENV_PREFIX}VAPID_SUBJECT: must be mailto:<address> or https://<host> "
                "(no path), as push services and py_vapid require"
            )
        for pattern in self.push_allowed_hosts:
            if not _HOST_PATTERN.fullmatch(pattern):
                problems.append(
                    f"{ENV_PREFIX}PUSH_ALLOWED_HOSTS: {pattern!r} is not a host name "
                    "(optionally starting with '*.')"
                )
        if not 0 < self.push_timeout <= 60:
            problems.append(f"{ENV_PREFIX}PUSH_TIMEOUT: must be in (0, 60]")
        return problems


def settings_fields() -> list[dataclasses.Field[Any]]:
    """The fields that are settings (each with its ``BACKCHANNEL_*`` variable)."""
    return [f for f in fields(Settings) if not f.metadata.get("internal")]


# What py_vapid accepts as the VAPID "sub" claim (it refuses to sign otherwise).
_VAPID_SUBJECT = re.compile(
    r"mailto:[^@\s]+@(localhost|[\w-]+(\.[\w-]+)+)|https://(localhost|[\w-]+\.[\w.-]+)"
)
# A /metrics bearer token: long enough not to be guessed, and safe in a header.
_METRICS_TOKEN = re.compile(r"[\x21-\x7e]{16,}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# A lower-case DNS name with at least two labels, optionally "*." in front.
_HOST_PATTERN = re.compile(r"(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")


def _convert(f: dataclasses.Field[Any], value: Any) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, got {value!r}")
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected an integer, got {value!r}") from None
        low, high = f.metadata.get("low"), f.metadata.get("high")
        if low is not None and high is not None and not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number
    if kind == "float":
        try:
            return float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number, got {value!r}") from None
    if kind == "tuple[str, ...]":
        # A TOML list, or a comma-separated string from the environment.
        items = value if isinstance(value, list | tuple) else str(value).split(",")
        texts = [str(item).strip() for item in items if str(item).strip()]
        if f.metadata.get("lower"):
            texts = [text.lower() for text in texts]
        return tuple(texts)
    if kind == "Path":
        return Path(str(value))
    if kind in ("str", "str | None"):
        text = str(value).strip()
        if kind == "str | None" and not text:
            return None
        return text.rstrip("/") if f.name in ("issuer", "mtls_base_url") else text
    raise ValueError(f"unsupported setting type {kind}")  # pragma: no cover
