"""The server the contract fuzzing runs against: the real app on hypercorn, on a loopback port.

It runs on its own event loop in a background thread, so that schemathesis
(which is synchronous) can call it over real HTTP. The database is seeded so
that generated requests reach deep code, not only the 401 path:

- ``fuzz-client``, client_secret_basic with a known secret, poll mode, CIBA
  and refresh grants, every scope, ``payment_initiation`` authorization
  details, allowed to enrol users;
- ``fuzz-post-client``, client_secret_post;
- three users (:data:`USERS`), named by the login hints in :data:`LOGIN_HINTS`:
  ``alice``'s requests are approved at once on her enrolled phone through
  the device API (so receipts exist; with her fingerprint, that is a WebAuthn
  assertion, when the request needs user verification), ``bob``'s are
  approved at once without a device (but for those that need user
  verification, which nobody can approve in his place), ``carol``'s are
  left pending;
- alice's phone, subscribed to a push service the tests make up, with a
  WebAuthn credential of a software authenticator.

The issuer is ``http://localhost:<port>`` (an IP address has no WebAuthn RP ID,
and user verification would be unavailable); requests go to 127.0.0.1.

Every log record the process writes while the fuzzing runs is kept in
:attr:`FuzzServer.records`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import httpx
from hypercorn.asyncio import serve
from hypercorn.config import Config

from backchannel.app import create_app
from backchannel.db.pool import connect
from backchannel.oauth.decision_recording import record_decision
from backchannel.oauth.secrets import hash_secret
from backchannel.settings import Settings
from tests.support import factories
from tests.support.device import enrolment_code, sign_jws
from tests.support.dpop import DPoPKey
from tests.support.postgres import TestPostgres
from tests.support.served import free_port
from tests.support.user_verification import UVPhone
from tests.support.webauthn import SoftAuthenticator, uv_challenge

T = TypeVar("T")

CLIENT_ID = "fuzz-client"
POST_CLIENT_ID = "fuzz-post-client"
USERS: dict[str, dict[str, str]] = {
    "alice": {
        "email": "alice@example.com",
        "phone": "+447700900123",
        "account": "12345678",
        "username": "alice",
    },
    "bob": {"email": "bob@example.com", "phone": "+447700900456", "username": "bob"},
    "carol": {"email": "carol@example.com", "account": "87654321"},
}
# Login hints that name the users above, in the shapes a relying party sends.
LOGIN_HINTS = (
    "alice@example.com",
    "tel:+44 7700 900123",
    "username:alice",
    "12345678",
    "bob@example.com",
    "mailto:bob@example.com",
    "+447700900456",
    "carol@example.com",
    "account:87654321",
    "nobody@example.com",
)


class RecordKeeper(logging.Handler):
    """Keeps every record at WARNING or above, and any record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.exc_info:
            self.records.append(record)


@dataclass
class FuzzServer:
    test_postgres: TestPostgres
    url: str = ""  # where requests go
    issuer: str = ""  # what the server calls itself
    secret: str = ""
    post_secret: str = ""
    phone: UVPhone | None = None
    # The relying party's DPoP key: tokens requested with its proofs are bound to it.
    dpop_key: DPoPKey = field(default_factory=DPoPKey)
    users: dict[str, int] = field(default_factory=dict)
    keeper: RecordKeeper = field(default_factory=RecordKeeper)
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _stop: asyncio.Event | None = None
    _done: Future[None] | None = None
    _db: asyncpg.Connection | None = None
    _http: httpx.AsyncClient | None = None

    @property
    def records(self) -> list[logging.LogRecord]:
        return self.keeper.records

    def basic_auth(self) -> str:
        raw = f"{CLIENT_ID}:{self.secret}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    # --- running ------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fuzz-server")
        self._thread.start()
        ready: Future[None] = Future()
        self._done = asyncio.run_coroutine_threadsafe(self._main(ready), self._loop)
        try:
            ready.result(timeout=60)
        except BaseException:
            self.stop()
            raise
        logging.getLogger().addHandler(self.keeper)

    def stop(self) -> None:
        logging.getLogger().removeHandler(self.keeper)
        assert self._loop is not None and self._thread is not None
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._done is not None:
            with contextlib.suppress(Exception):
                self._done.result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()

    def run(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop (where its pool lives) and wait for it."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout)

    async def _main(self, ready: Future[None]) -> None:
        dsn = await self.test_postgres.create_database()
        try:
            await self._serve(dsn, ready)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            await self.test_postgres.drop_database(dsn)

    async def _serve(self, dsn: str, ready: Future[None]) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.issuer = f"http://localhost:{port}"
        settings = Settings(
            issuer=self.issuer,
            port=port,
            database_url=dsn,
            db_pool_min=1,
            db_pool_max=10,
            poll_interval=1,
            # Generated requests come fast and for three users only: no push-fatigue limits,
            # and a generated "this wasn't me" neither mutes the client nor suspends alice.
            fatigue_max_pending=0,
            fatigue_max_prompts=0,
            not_me_mute=0,
            not_me_suspend_after=0,
            # The phone's push service (tests/support/device.py); nothing is delivered there.
            push_allowed_hosts=(*Settings().push_allowed_hosts, "push.example.net"),
        )
        self._db = await connect(dsn)
        await self._seed(self._db)
        app = create_app(settings)
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.accesslog = None
        self._stop = asyncio.Event()
        server = asyncio.create_task(serve(app, config, shutdown_trigger=self._stop.wait))  # type: ignore[arg-type]
        async with httpx.AsyncClient(base_url=self.url, timeout=30) as http:
            self._http = http
            for _ in range(200):
                try:
                    await http.get("/.well-known/openid-configuration")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            await self._enrol_phone(http, self._db)
            ready.set_result(None)
            try:
                await server
            finally:
                app.state.services.waiters.release_all()
                await self._db.close()

    async def _seed(self, db: asyncpg.Connection) -> None:
        _, secret = await factories.create_client(
            db,
            client_id=CLIENT_ID,
            name="Fuzz Client",
            may_enrol_users=True,
            authorization_details_types=("payment_initiation",),
        )
        assert secret is not None
        self.secret = secret
        _, post_secret = await factories.create_client(
            db, client_id=POST_CLIENT_ID, token_endpoint_auth_method="client_secret_post"
        )
        assert post_secret is not None
        self.post_secret = post_secret
        for subject, identifiers in USERS.items():
            user = await factories.create_user(
                db, subject=subject, display_name=subject.title() + " Example", **identifiers
            )
            self.users[subject] = user.user_id

    async def _enrol_phone(self, http: httpx.AsyncClient, db: asyncpg.Connection) -> None:
        phone = UVPhone(name="Alice's phone", issuer=self.issuer)
        code = await enrolment_code(db, self.users["alice"])
        response = await phone.enrol(http, code)
        assert response.status_code == 201, response.text
        await phone.register(http, SoftAuthenticator(origin=self.issuer))
        self.phone = phone

    # --- deciding -----------------------------------------------------------------------------

    def decide(self, auth_req_id: str) -> None:
        """Approve the request at once if it is alice's (on her phone) or bob's (directly)."""
        self.run(lambda: self._decide(auth_req_id))

    async def _decide(self, auth_req_id: str) -> None:
        assert self._db is not None and self._http is not None and self.phone is not None
        id_hash = hash_secret(auth_req_id)
        row = await self._db.fetchrow(
            "SELECT user_id, user_verification FROM auth_requests WHERE id_hash = $1", id_hash
        )
        if row is None:
            return
        user_id = row["user_id"]
        if user_id == self.users["bob"] and row["user_verification"] != "required":
            await record_decision(self._db, id_hash, "approved")
        elif user_id == self.users["alice"]:
            for entry in await self.phone.pending(self._http):
                if entry["ref"] == id_hash.hex():
                    extra = {}
                    if entry["user_verification"] == "required":
                        challenge = uv_challenge(
                            entry, authorization_details=entry.get("authorization_details")
                        )
                        extra["webauthn"] = self.phone.authenticator.get(challenge)
                    response = await self.phone.decide(self._http, entry, "approve", **extra)
                    assert response.status_code == 200, response.text

    def device_jws(self, path: str, payload: dict[str, Any]) -> str:
        """A call to ``path`` signed by alice's phone; ``payload`` overrides the claims
        (whatever their names), and a ``None`` value removes one."""
        assert self.phone is not None and self.phone.device_id is not None
        claims = {
            "htm": "POST",
            "htu": self.issuer + path,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
            **payload,
        }
        header = {"alg": "ES256", "typ": "bc-device+jwt", "kid": self.phone.device_id}
        return sign_jws(header, {k: v for k, v in claims.items() if v is not None}, self.phone.key)

    def registration_options(self) -> dict[str, Any] | None:
        """Fresh WebAuthn creation options for alice's phone (a challenge it may spend).
        When the phone holds as many credentials as it may, those registered by generated
        requests are deleted first, so that registrations keep reaching the checks."""
        return self.run(self._registration_options)

    async def _registration_options(self) -> dict[str, Any] | None:
        assert self._http is not None and self._db is not None and self.phone is not None
        response = await self.phone.call(self._http, "/device/webauthn/register-options")
        if response.status_code == 409:
            await self._db.execute(
                "DELETE FROM webauthn_credentials WHERE device_id = $1 AND credential_id <> $2",
                self.phone.device_id,
                self.phone.authenticator.credential_id,
            )
            response = await self.phone.call(self._http, "/device/webauthn/register-options")
        return response.json()["publicKey"] if response.status_code == 200 else None

    def fresh_prompt(self, form: dict[str, str]) -> dict[str, Any] | None:
        """A new request for alice (``form`` adds to its scope and login hint) as her phone
        lists it, left pending for a generated decision; None if it was refused."""
        return self.run(lambda: self._fresh_prompt(form))

    async def _fresh_prompt(self, form: dict[str, str]) -> dict[str, Any] | None:
        assert self._http is not None and self.phone is not None
        response = await self._http.post(
            "/bc-authorize",
            data={"scope": "openid", "login_hint": "alice@example.com", **form},
            headers={"Authorization": self.basic_auth()},
        )
        if response.status_code != 200:
            return None
        ref = hashlib.sha256(response.json()["auth_req_id"].encode()).hexdigest()
        for entry in await self.phone.pending(self._http):
            if entry["ref"] == ref:
                return entry
        return None

    def dpop_proof(self, path: str) -> str:
        """A DPoP proof of the relying party's key for ``POST path``."""
        return self.dpop_key.proof("POST", self.issuer + path)
