"""The prompt of a new request: the app's ``PromptComposer`` (oauth/device_prompt.py)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from backchannel.authenticator.messages import dismiss_payload, prompt_payload, push_topic
from backchannel.authenticator.number_matching import new_number_match
from backchannel.oauth.device_prompt import DevicePrompt
from backchannel.oauth.secrets import new_secret

CHALLENGE_BYTES = 16


def compose_prompt(
    *,
    ref: str,
    client_id: str,
    client_name: str,
    binding_message: str | None,
    scope: Sequence[str],
    expires_at: datetime,
    number_matching: bool,
    user_verification_required: bool = False,
    authorization_details: Sequence[Mapping[str, Any]] | None = None,
) -> DevicePrompt:
    """A fresh challenge, number-matching choices when the client asks for them, and the
    prompt and dismiss messages for ``ref``."""
    challenge = new_secret(CHALLENGE_BYTES)
    numbers = new_number_match() if number_matching else None
    payload = prompt_payload(
        ref=ref,
        client_id=client_id,
        client_name=client_name,
        binding_message=binding_message,
        scope=scope,
        expires_at=expires_at,
        challenge=challenge,
        number_choices=numbers.choices if numbers else None,
        user_verification_required=user_verification_required,
        authorization_details=authorization_details,
    )
    return DevicePrompt(
        challenge=challenge,
        topic=push_topic(ref),
        payload=payload,
        withdrawal=dismiss_payload(ref),
        number_match=numbers.number if numbers else None,
        number_choices=numbers.choices if numbers else None,
    )
