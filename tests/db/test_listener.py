"""The LISTEN connection: channels are known before it starts."""

from __future__ import annotations

import pytest

from backchannel.db.listener import PgListener


async def test_a_channel_subscribed_after_start_is_refused_not_silently_unheard(
    database_url: str,
) -> None:
    listener = PgListener(database_url)
    listener.subscribe("bc_known", lambda _payload: None)
    await listener.start()
    try:
        listener.subscribe("bc_known", lambda _payload: None)  # another handler: fine
        with pytest.raises(RuntimeError, match="before the listener starts"):
            listener.subscribe("bc_late", lambda _payload: None)
    finally:
        await listener.close()
