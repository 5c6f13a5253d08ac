"""Push mode (CIBA §10.3): the token response a push client receives, minted once.

The notification worker calls :func:`mint_push_tokens` for an approved
request of a push client the first time it sends. Redemption, issuance and
storing the sealed response on the notification row commit together, so the
tokens exist exactly once: every later attempt resends the stored response.
The ID token carries ``urn:openid:params:jwt:claim:auth_req_id``, ``at_hash``
and, with a refresh token, ``urn:openid:params:jwt:claim:rt_hash`` (§10.3.1).
"""

from __future__ import annotations

from typing import Any

from backchannel.db.auth_requests import redeem_auth_request, select_auth_request_status
from backchannel.db.client_notifications import (
    NotificationJob,
    sealed_field,
    store_push_response,
)
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import Grant, issue_tokens


class LeaseLost(Exception):
    """Another worker owns the notification now; the minting is rolled back."""


async def mint_push_tokens(
    services: Services, job: NotificationJob, auth_req_id: str
) -> dict[str, Any] | None:
    """The §10.3 body for an approved push request; None if the job's lease was lost."""
    client = await services.clients.get(job.client_id)
    if client is None or client.disabled:
        return _error(auth_req_id, None)
    try:
        async with services.pool.acquire() as conn, conn.transaction():
            redemption = await redeem_auth_request(conn, job.auth_request_id)
            if redemption is None:
                # Expired, revoked or its user disabled since the approval: no tokens.
                state = await select_auth_request_status(conn, job.id_hash)
                return _error(auth_req_id, state)
            grant = Grant.of_redemption(client, redemption, auth_req_id)
            body = {"auth_req_id": auth_req_id, **await issue_tokens(services, conn, grant)}
            sealed = services.wrapper.wrap_json(body, sealed_field(job.id_hash, "response"))
            if not await store_push_response(conn, job, sealed):
                raise LeaseLost
    except LeaseLost:
        return None
    return body


def _error(auth_req_id: str, state: str | None) -> dict[str, Any]:
    if state == "expired":
        error, description = "expired_token", "the request expired before the tokens were issued"
    elif state == "denied":
        error, description = "access_denied", "the request was revoked"
    else:
        error, description = "transaction_failed", "the tokens could not be issued"
    return {"auth_req_id": auth_req_id, "error": error, "error_description": description}
