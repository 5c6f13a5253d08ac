"""The relying party's CIBA client: start an authentication, wait for the tokens, use them.

One :class:`CibaClient` per provider and client registration. It shares one
``aiohttp.ClientSession`` (its own, or one passed in, which it then leaves
open) and caches the provider's discovery document and keys.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import aiohttp
from joserfc.jwk import Key

from backchannel.rp import transport
from backchannel.rp.algorithms import ASYMMETRIC_ALGS, default_alg
from backchannel.rp.authentication_request import (
    DEFAULT_INTERVAL,
    AuthenticationStarted,
    as_form,
    parse_started,
    request_parameters,
    signed_request,
)
from backchannel.rp.client_auth import ClientAuth
from backchannel.rp.clock import Clock, SystemClock
from backchannel.rp.discovery import ProviderMetadata
from backchannel.rp.errors import OAuthError, ProtocolError, UsageError
from backchannel.rp.id_token import Expected, verify_id_token
from backchannel.rp.pending import PendingRequests
from backchannel.rp.polling import Pacing, PollAnswer, poll_until_decided
from backchannel.rp.provider import Provider
from backchannel.rp.signing import check_signing_key
from backchannel.rp.tokens import TokenResponse, read_token_response

CIBA_GRANT = "urn:openid:params:grant-type:ciba"
MAX_LONG_POLL_WAIT = 3600


class CibaClient:
    """An async CIBA client for one registered client at one provider.

    ``issuer`` is the provider's issuer identifier; ``auth`` one of
    :class:`ClientSecretBasic`, :class:`ClientSecretPost` or :class:`PrivateKeyJwt`.
    With ``request_signing_key`` every authentication request is signed (CIBA §7.1.1).
    ``long_poll_wait`` is the ``Prefer: wait`` asked of the token endpoint; 0 turns
    long polling off. ``timeout`` bounds each HTTP exchange (a held poll gets
    its wait on top). ``clock_skew`` is the leeway for ID token times.
    ``cache_ttl`` keeps discovery and keys served without ``Cache-Control``, and
    ``max_cache_ttl`` caps what a ``max-age`` may ask;
    ``refetch_interval`` is the least time between two key-set fetches caused by
    an unknown ``kid``. ``clock`` replaces the real clocks and sleep.
    """

    def __init__(
        self,
        issuer: str,
        auth: ClientAuth,
        *,
        session: aiohttp.ClientSession | None = None,
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
        if not 0 <= long_poll_wait <= MAX_LONG_POLL_WAIT:
            raise UsageError(f"long_poll_wait must be 0 to {MAX_LONG_POLL_WAIT} seconds")
        self.issuer = issuer
        self.auth = auth
        self.long_poll_wait = long_poll_wait
        self.timeout = timeout
        self.clock_skew = clock_skew
        self._clock: Clock = clock or SystemClock()
        self._session = session
        self._owns_session = session is None
        self._closed = False
        self._signing_key = request_signing_key
        self._signing_alg: str | None = None
        if request_signing_key is not None:
            self._signing_alg = request_signing_alg or default_alg(request_signing_key)
            check_signing_key(request_signing_key, self._signing_alg)
        self._provider = Provider(
            issuer,
            self._http,
            self._clock,
            timeout=timeout,
            cache_ttl=cache_ttl,
            max_cache_ttl=max_cache_ttl,
            refetch_interval=refetch_interval,
        )
        self._pending = PendingRequests(self._clock)

    @property
    def client_id(self) -> str:
        return self.auth.client_id

    def notification_token_for(self, auth_req_id: str) -> str | None:
        """The ``client_notification_token`` sent with a request this client started."""
        pending = self._pending.get(auth_req_id)
        return pending.notification_token if pending is not None else None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session if the client created it; the client is then done."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise UsageError("the client is closed")
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    async def discover(self) -> ProviderMetadata:
        """The provider's metadata (OIDC Discovery §4), cached per its ``Cache-Control``."""
        return await self._provider.metadata()

    # -- one authenticated call ------------------------------------------------------------

    async def _post(
        self,
        url: str,
        form: Mapping[str, str],
        *,
        headers: Mapping[str, str] | None = None,
        within: float | None = None,
    ) -> transport.Answer:
        body, sent_headers = dict(form), dict(headers or {})
        self.auth.apply(body, sent_headers, issuer=self.issuer)
        return await transport.exchange(
            self._http(),
            "POST",
            url,
            form=body,
            headers=sent_headers,
            within=within or self.timeout,
        )

    # -- CIBA ------------------------------------------------------------------------------

    async def start(
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
        """Ask the provider to authenticate the user named by exactly one hint (CIBA §7.1).

        Ping and push clients pass their ``client_notification_token``; the client
        keeps it for the notification receiver.
        """
        params = request_parameters(
            scope=scope,
            login_hint=login_hint,
            id_token_hint=id_token_hint,
            login_hint_token=login_hint_token,
            binding_message=binding_message,
            requested_expiry=requested_expiry,
            authorization_details=authorization_details,
            user_code=user_code,
            acr_values=acr_values,
            client_notification_token=client_notification_token,
        )
        metadata = await self.discover()
        if self._signing_key is not None and self._signing_alg is not None:
            form = {
                "request": signed_request(
                    params,
                    client_id=self.client_id,
                    issuer=self.issuer,
                    key=self._signing_key,
                    alg=self._signing_alg,
                    now=self._clock.time(),
                )
            }
        else:
            form = as_form(params)
        answer = await self._post(metadata.backchannel_authentication_endpoint, form)
        started = parse_started(transport.json_or_error(answer, self._clock.time()))
        self._pending.add(started, client_notification_token)
        return started

    async def wait(
        self,
        request: AuthenticationStarted | str,
        *,
        long_poll_wait: int | None = None,
    ) -> TokenResponse:
        """Poll until the user decides; the verified tokens (CIBA §7.3, §10.1, §11).

        ``request`` is what :meth:`start` returned, or its ``auth_req_id`` (this
        client then uses the interval and expiry it noted; for an id it did not
        start, 5 seconds and no deadline of its own). Raises :class:`AccessDenied`,
        :class:`ExpiredToken`, :class:`InvalidGrant`, … when that is the answer.
        """
        auth_req_id = request if isinstance(request, str) else request.auth_req_id
        known = self._pending.get(auth_req_id)
        if isinstance(request, AuthenticationStarted) and known is None:
            known = self._pending.add(request, None)
        wait = self.long_poll_wait if long_poll_wait is None else long_poll_wait
        pacing = Pacing(
            interval=known.started.interval if known else DEFAULT_INTERVAL,
            deadline=known.deadline if known else None,
            long_poll_wait=wait,
        )
        metadata = await self.discover()
        form = {"grant_type": CIBA_GRANT, "auth_req_id": auth_req_id}

        async def poll_once(hold: int) -> PollAnswer:
            headers = {"Prefer": f"wait={hold}"} if hold else {}
            answer = await self._post(
                metadata.token_endpoint, form, headers=headers, within=self.timeout + hold
            )
            held = "Preference-Applied" in answer.headers
            if answer.status == 200:
                return PollAnswer(answer.json_object(), None, held)
            return PollAnswer(None, transport.oauth_error(answer, self._clock.time()), held)

        try:
            body = await poll_until_decided(poll_once, pacing, self._clock)
        except OAuthError:
            self._pending.forget(auth_req_id)  # a final answer; not so after a network failure
            raise
        self._pending.forget(auth_req_id)  # spent, whatever the verification finds
        return await self._verified(body, auth_req_id=auth_req_id)

    async def _verified(
        self, body: Mapping[str, Any], *, auth_req_id: str | None, push: bool = False
    ) -> TokenResponse:
        unverified = read_token_response(body, id_token_required=auth_req_id is not None)
        claims = None
        if unverified.id_token is not None:
            claims = await self.verify_id_token(
                unverified.id_token,
                auth_req_id=auth_req_id,
                access_token=unverified.access_token,
                refresh_token=unverified.refresh_token,
                hashes_required=push,
            )
        return unverified.verified(claims)

    async def verify_id_token(
        self,
        id_token: str,
        *,
        auth_req_id: str | None = None,
        access_token: str | None = None,
        refresh_token: str | None = None,
        hashes_required: bool = False,
    ) -> dict[str, Any]:
        """The claims of an ID token from this provider for this client, once verified.

        With ``auth_req_id`` its CIBA claim must name it; ``access_token`` and
        ``refresh_token`` are checked against ``at_hash`` and ``rt_hash`` when
        present (mandatory with ``hashes_required``, as for push, CIBA §10.3.1).
        """
        metadata = await self.discover()
        advertised = metadata.id_token_signing_alg_values_supported
        algorithms = [a for a in advertised if a in ASYMMETRIC_ALGS] if advertised else ["RS256"]
        expected = Expected(
            issuer=self.issuer,
            client_id=self.client_id,
            algorithms=algorithms,
            now=self._clock.time(),
            skew=self.clock_skew,
            auth_req_id=auth_req_id,
            access_token=access_token,
            refresh_token=refresh_token,
            hashes_required=hashes_required,
        )
        return await verify_id_token(id_token, self._provider.keys, expected)

    # -- after the authentication ----------------------------------------------------------

    async def refresh(
        self, refresh_token: str, *, scope: str | Sequence[str] | None = None
    ) -> TokenResponse:
        """New tokens for a refresh token (RFC 6749 §6); an ID token in the answer is verified."""
        metadata = await self.discover()
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if scope is not None:
            form["scope"] = scope if isinstance(scope, str) else " ".join(scope)
        answer = await self._post(metadata.token_endpoint, form)
        body = transport.json_or_error(answer, self._clock.time())
        return await self._verified(body, auth_req_id=None)

    async def revoke(self, token: str, *, token_type_hint: str | None = None) -> None:
        """Revoke an access or refresh token (RFC 7009 §2.1)."""
        metadata = await self.discover()
        form = {"token": token}
        if token_type_hint is not None:
            form["token_type_hint"] = token_type_hint
        answer = await self._post(metadata.endpoint("revocation_endpoint"), form)
        if answer.status != 200:
            raise transport.oauth_error(answer, self._clock.time())

    async def introspect(self, token: str, *, token_type_hint: str | None = None) -> dict[str, Any]:
        """The provider's view of a token (RFC 7662 §2.2): ``{"active": false}`` or its data."""
        metadata = await self.discover()
        form = {"token": token}
        if token_type_hint is not None:
            form["token_type_hint"] = token_type_hint
        answer = await self._post(metadata.endpoint("introspection_endpoint"), form)
        body = transport.json_or_error(answer, self._clock.time())
        if not isinstance(body.get("active"), bool):
            raise ProtocolError("the introspection answer has no boolean active member")
        return body

    async def userinfo(
        self, access_token: str, *, expected_subject: str | None = None
    ) -> dict[str, Any]:
        """The user's claims (OIDC Core §5.3). With ``expected_subject`` (the ID token's
        ``sub``) a different ``sub`` is refused, as OIDC Core §5.3.2 requires."""
        metadata = await self.discover()
        answer = await transport.exchange(
            self._http(),
            "GET",
            metadata.endpoint("userinfo_endpoint"),
            headers={"Authorization": f"Bearer {access_token}"},
            within=self.timeout,
        )
        claims = transport.json_or_error(answer, self._clock.time())
        if not isinstance(claims.get("sub"), str):
            raise ProtocolError("the userinfo answer has no sub")
        if expected_subject is not None and claims["sub"] != expected_subject:
            raise ProtocolError("the userinfo sub is not the ID token's sub")
        return claims

    async def verified_push(self, body: Mapping[str, Any], auth_req_id: str) -> TokenResponse:
        """Tokens pushed to the notification endpoint (CIBA §10.3.1), verified as push
        requires: ``at_hash``, the ``auth_req_id`` claim, and ``rt_hash`` with a refresh token."""
        return await self._verified(body, auth_req_id=auth_req_id, push=True)

    def forget(self, auth_req_id: str) -> None:
        """Drop what the client noted about a request it started (done with it)."""
        self._pending.forget(auth_req_id)
