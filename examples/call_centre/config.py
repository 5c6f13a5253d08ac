"""The panel's settings, read once from ``CALL_CENTRE_*`` environment variables.

| Variable | |
|---|---|
| ``CALL_CENTRE_ISSUER`` | The CIBA provider's issuer URL (required). |
| ``CALL_CENTRE_CLIENT_ID`` | The panel's client_id at the provider (required). |
| ``CALL_CENTRE_CLIENT_KEY_FILE`` | A private JWK (JSON) for ``private_key_jwt``; or |
| ``CALL_CENTRE_CLIENT_SECRET_FILE`` | a file holding the client secret (``client_secret_basic``). |
| ``CALL_CENTRE_AGENTS_FILE`` | The agents who may log in (TOML, see ``agents``; required). |
| ``CALL_CENTRE_HOST``, ``CALL_CENTRE_PORT`` | Where to listen (127.0.0.1, 8100). |
| ``CALL_CENTRE_PUBLIC_URL`` | The URL agents open (``http://HOST:PORT``); https: Secure cookie. |
| ``CALL_CENTRE_REQUEST_EXPIRY`` | Seconds the caller has to answer (120). |
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from joserfc import jwk
from joserfc.errors import JoseError

from backchannel.rp import ClientAuth, ClientSecretBasic, PrivateKeyJwt
from examples.call_centre.agents import AgentDirectory

DEFAULT_PORT = 8100
DEFAULT_REQUEST_EXPIRY = 120


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class PanelConfig:
    issuer: str
    auth: ClientAuth
    agents: AgentDirectory
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    public_url: str = ""  # empty: http://host:port
    request_expiry: int = DEFAULT_REQUEST_EXPIRY
    session_idle: float = 30 * 60  # seconds without a request before a session ends
    session_lifetime: float = 10 * 60 * 60  # a working day, whatever the activity

    @property
    def origin(self) -> str:
        """The panel's own origin, which form posts must come from."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def secure_cookies(self) -> bool:
        return self.origin.startswith("https://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PanelConfig:
        env = os.environ if env is None else env

        def required(name: str) -> str:
            value = env.get(name, "").strip()
            if not value:
                raise ConfigError(f"{name} is required")
            return value

        def number(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            if not text:
                return default
            if not text.isdigit():
                raise ConfigError(f"{name} must be a whole number, not {text!r}")
            return int(text)

        agents_file = Path(required("CALL_CENTRE_AGENTS_FILE"))
        try:
            agents = AgentDirectory.from_toml(agents_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"CALL_CENTRE_AGENTS_FILE ({agents_file}): {exc}") from exc
        expiry = number("CALL_CENTRE_REQUEST_EXPIRY", DEFAULT_REQUEST_EXPIRY)
        if expiry < 10:
            raise ConfigError("CALL_CENTRE_REQUEST_EXPIRY must be at least 10 seconds")
        return cls(
            issuer=required("CALL_CENTRE_ISSUER").rstrip("/"),
            auth=client_auth(required("CALL_CENTRE_CLIENT_ID"), env),
            agents=agents,
            host=env.get("CALL_CENTRE_HOST", "").strip() or "127.0.0.1",
            port=number("CALL_CENTRE_PORT", DEFAULT_PORT),
            public_url=env.get("CALL_CENTRE_PUBLIC_URL", "").strip(),
            request_expiry=expiry,
        )


def client_auth(client_id: str, env: Mapping[str, str]) -> ClientAuth:
    """``private_key_jwt`` with the key file, else ``client_secret_basic`` with the secret file."""
    key_file = env.get("CALL_CENTRE_CLIENT_KEY_FILE", "").strip()
    secret_file = env.get("CALL_CENTRE_CLIENT_SECRET_FILE", "").strip()
    if key_file and secret_file:
        raise ConfigError(
            "set CALL_CENTRE_CLIENT_KEY_FILE or CALL_CENTRE_CLIENT_SECRET_FILE, not both"
        )
    if key_file:
        return PrivateKeyJwt(client_id, read_private_key(Path(key_file)))
    if secret_file:
        try:
            secret = Path(secret_file).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"CALL_CENTRE_CLIENT_SECRET_FILE: {exc}") from exc
        if not secret:
            raise ConfigError(f"CALL_CENTRE_CLIENT_SECRET_FILE ({secret_file}) is empty")
        return ClientSecretBasic(client_id, secret)
    raise ConfigError("CALL_CENTRE_CLIENT_KEY_FILE or CALL_CENTRE_CLIENT_SECRET_FILE is required")


def read_private_key(path: Path) -> jwk.Key:
    try:
        key = jwk.import_key(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, JoseError) as exc:
        raise ConfigError(f"CALL_CENTRE_CLIENT_KEY_FILE ({path}): {exc}") from exc
    if not key.is_private:
        raise ConfigError(f"CALL_CENTRE_CLIENT_KEY_FILE ({path}) holds no private key")
    return key
