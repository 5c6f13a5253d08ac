"""The demo client and demo user that ``backchannel dev`` sets up.

Both are created only if absent, so ``dev`` can be run again and again. The
database keeps only the hash of the demo client's secret, so the secret is
kept in ``<data_dir>/demo-client-secret`` (mode 0600) to be shown on the next
run too. Never used by ``serve``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from backchannel.authenticator.enrolment import EnrolmentCode, issue_enrolment_code
from backchannel.db.clients import select_client
from backchannel.db.users import LoginHint, select_user_by_subject
from backchannel.oauth.provisioning import create_user
from backchannel.oauth.registration import ClientRegistration, store_client, validate_registration
from backchannel.oauth.secrets import new_secret, secret_matches
from backchannel.settings import Settings

DEMO_CLIENT_ID = "demo-client"
DEMO_CLIENT_NAME = "Demo relying party"
DEMO_SUBJECT = "demo-user"
DEMO_USER_NAME = "Demo User"
DEMO_EMAIL = "demo@example.com"
DEMO_USERNAME = "demo"
SECRET_FILE_NAME = "demo-client-secret"


@dataclass(frozen=True)
class Demo:
    client_id: str
    # None when the client exists but its secret file is gone or does not match.
    client_secret: str | None
    secret_file: Path
    subject: str
    login_hint: str
    created: tuple[str, ...]  # what this run created: "client", "user"
    # A fresh one-time code to enrol a phone (or this machine's browser) for the demo user.
    enrolment: EnrolmentCode | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "client_secret_file": str(self.secret_file),
            "subject": self.subject,
            "login_hint": self.login_hint,
            "created": list(self.created),
            "enrolment_url": self.enrolment.url if self.enrolment else None,
            "enrolment_expires_in": self.enrolment.expires_in if self.enrolment else None,
        }


def demo_registration() -> ClientRegistration:
    return ClientRegistration(
        name=DEMO_CLIENT_NAME,
        client_id=DEMO_CLIENT_ID,
        token_endpoint_auth_method="client_secret_basic",
        backchannel_token_delivery_mode="poll",
    )


async def ensure_demo(conn: asyncpg.Connection, settings: Settings) -> Demo:
    """Create the demo client and user unless they exist; return what to show."""
    secret_file = settings.data_dir / SECRET_FILE_NAME
    kept = _read_secret(secret_file)
    created: list[str] = []

    client = await select_client(conn, DEMO_CLIENT_ID)
    secret: str | None
    if client is None:
        secret = kept or new_secret()
        if secret != kept:
            _write_secret(secret_file, secret)
        reg = validate_registration(demo_registration(), settings)
        await store_client(conn, reg, secret, actor="dev")
        created.append("client")
    else:
        secret = kept if kept and secret_matches(kept, client.secret_hash) else None

    user = await select_user_by_subject(conn, DEMO_SUBJECT)
    if user is None:
        await create_user(
            conn,
            subject=DEMO_SUBJECT,
            display_name=DEMO_USER_NAME,
            hints=[LoginHint("email", DEMO_EMAIL), LoginHint("username", DEMO_USERNAME)],
            actor="dev",
        )
        created.append("user")
        user = await select_user_by_subject(conn, DEMO_SUBJECT)
        assert user is not None
    enrolment = await issue_enrolment_code(
        conn, user.user_id, "cli", settings.enrolment_code_ttl, issuer=settings.issuer
    )

    return Demo(
        client_id=DEMO_CLIENT_ID,
        client_secret=secret,
        secret_file=secret_file,
        subject=DEMO_SUBJECT,
        login_hint=DEMO_EMAIL,
        created=tuple(created),
        enrolment=enrolment,
    )


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # also when the file existed with wider permissions
        os.write(fd, (secret + "\n").encode())
    finally:
        os.close(fd)
