"""One notification POST: a token that cannot travel in a header fails the delivery, quietly."""

from __future__ import annotations

import aiohttp
import pytest

from backchannel.delivery.notifications import post_notification


@pytest.mark.parametrize("bearer", ["abc\n", "abc\r\nX-Injected: 1", "two words", ""])
async def test_a_malformed_notification_token_fails_the_delivery_without_sending(
    bearer: str,
) -> None:
    async with aiohttp.ClientSession() as http:
        result = await post_notification(
            http,
            "https://rp.example.com/cb",
            bearer,
            {"auth_req_id": "x"},
            seconds=1.0,
            allow_insecure=False,
        )
    assert result.outcome == "failed"
    assert result.error == "the client_notification_token is malformed"
