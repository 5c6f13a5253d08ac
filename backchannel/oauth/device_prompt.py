"""The prompt a new request sends to the user's devices, as /bc-authorize sees it.

The protocol layer does not know the authenticator's message format. The app
hands it a :class:`PromptComposer` (``backchannel.authenticator.prompts``),
the hook through which a request reaches the user's devices, as an OpenID
provider lets its embedder trigger the authentication device. What comes
back is stored with the request and queued in the same statement.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class DevicePrompt:
    challenge: str  # what the device signs its decision over, with the request
    topic: str  # the Web Push topic of the request's messages
    payload: dict[str, Any]  # the prompt message
    withdrawal: dict[str, Any]  # the message that withdraws it
    number_match: str | None = None  # the number the relying party shows
    number_choices: tuple[str, ...] | None = None  # the numbers the phone offers


class PromptComposer(Protocol):
    def __call__(
        self,
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
    ) -> DevicePrompt: ...
