"""Real tokens for tests: issued by the server's own code inside a transaction."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backchannel.db.users import User
from backchannel.oauth.services import Services
from backchannel.oauth.token_issuance import Grant, issue_tokens
from tests.conftest import RegisteredClient


async def issue_tokens_for(
    services: Services,
    client: RegisteredClient,
    user: User,
    scope: str = "openid email",
    *,
    auth_time: datetime | None = None,
) -> dict[str, Any]:
    """The token response the client would get for ``user`` with ``scope``."""
    async with services.pool.acquire() as conn, conn.transaction():
        grant = Grant(
            client=client.client,
            user_id=user.user_id,
            subject=user.subject,
            scope=tuple(scope.split()),
            auth_time=auth_time or datetime.now(UTC),
        )
        return await issue_tokens(services, conn, grant)
