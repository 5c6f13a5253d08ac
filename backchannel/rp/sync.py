"""A blocking face of :class:`CibaClient` for code without an event loop.

The async client runs on a private event loop in a background thread; each
method submits its coroutine there and blocks until it is done. Any thread
may call, several at once. Close the client (or use ``with``) to stop the loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from joserfc.jwk import Key

from backchannel.rp.authentication_request import AuthenticationStarted
from backchannel.rp.client import CibaClient
from backchannel.rp.client_auth import ClientAuth
from backchannel.rp.clock import Clock
from backchannel.rp.discovery import ProviderMetadata
from backchannel.rp.errors import UsageError
from backchannel.rp.tokens import TokenResponse

R = TypeVar("R")


class SyncCibaClient:
    """The same calls as :class:`CibaClient`, blocking; the options are the same too,
    except ``session`` (the client makes its own on its loop)."""

    def __init__(
        self,
        issuer: str,
        auth: ClientAuth,
        *,
        request_signing_key: Key | None = None,
        request_signing_alg: str | None = None,
        long_poll_wait: int = 25,
        timeout: float = 10.0,
        clock_skew: float = 30.0,
        cache_ttl: float = 300.0,
        max_cache_ttl: float = 86400.0,
        refetch_interval: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._client = CibaClient(
            issuer,
            auth,
            request_signing_key=request_signing_key,
            request_signing_alg=request_signing_alg,
            long_poll_wait=long_poll_wait,
            timeout=timeout,
            clock_skew=clock_skew,
            cache_ttl=cache_ttl,
            max_cache_ttl=max_cache_ttl,
            refetch_interval=refetch_interval,
            clock=clock,
        )
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="backchannel-rp", daemon=True
        )
        self._thread.start()
        self._closed = False

    @property
    def client(self) -> CibaClient:
        """The async client underneath (to be used only on this wrapper's loop)."""
        return self._client

    def _run(self, coroutine: Coroutine[Any, Any, R]) -> R:
        if self._closed:
            coroutine.close()
            raise UsageError("the client is closed")
        if threading.current_thread() is self._thread:
            coroutine.close()
            raise UsageError("a blocking call from the client's own loop would never return")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def discover(self) -> ProviderMetadata:
        return self._run(self._client.discover())

    def start(
        self,
        *,
        login_hint: str | None = None,
        id_token_hint: str | None = None,
        login_hint_token: str | None = None,
        scope: str | Sequence[str] = "openid",
        binding_message: str | None = None,
        requested_expiry: int | None = None,
        authorization_details: Sequence[Mapping[str, Any]] | None = None,
        user_code: str | None = None,
        acr_values: str | Sequence[str] | None = None,
        client_notification_token: str | None = None,
    ) -> AuthenticationStarted:
        return self._run(
            self._client.start(
                login_hint=login_hint,
                id_token_hint=id_token_hint,
                login_hint_token=login_hint_token,
                scope=scope,
                binding_message=binding_message,
                requested_expiry=requested_expiry,
                authorization_details=authorization_details,
                user_code=user_code,
                acr_values=acr_values,
                client_notification_token=client_notification_token,
            )
        )

    def wait(
        self, request: AuthenticationStarted | str, *, long_poll_wait: int | None = None
    ) -> TokenResponse:
        return self._run(self._client.wait(request, long_poll_wait=long_poll_wait))

    def verify_id_token(
        self,
        id_token: str,
        *,
        auth_req_id: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
    ) -> dict[str, Any]:
        return self._run(
            self._client.verify_id_token(
                id_token,
                auth_req_id=auth_req_id,
                access_token=access_token,
                refresh_token=refresh_token,
            )
        )

    def refresh(
        self, refresh_token: str, *, scope: str | Sequence[str] | None = None
    ) -> TokenResponse:
        return self._run(self._client.refresh(refresh_token, scope=scope))

    def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        self._run(self._client.revoke(token, token_type_hint=token_type_hint))

    def introspect(self, token: str, *, token_type_hint: str | None = None) -> dict[str, Any]:
        return self._run(self._client.introspect(token, token_type_hint=token_type_hint))

    def userinfo(self, access_token: str, *, expected_subject: str | None = None) -> dict[str, Any]:
        return self._run(self._client.userinfo(access_token, expected_subject=expected_subject))

    def close(self) -> None:
        """Close the HTTP session and stop the loop thread; later calls raise UsageError."""
        if self._closed:
            return
        try:
            self._run(self._client.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
