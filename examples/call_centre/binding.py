"""Why the agent calls, and the binding message the caller reads back (CIBA §7.1).

The caller's phone shows the panel's client name and the binding message,
e.g. "Agent 42: password reset, code K7Q2". The agent asks the caller to read
the code aloud before approving: it shows the caller that the prompt on their
phone is this call's, and the agent that the caller is looking at it. Codes
avoid characters that are easily confused when read aloud or on a small
screen (0/O, 1/I/L, 2/Z, 5/S, 8/B).
"""

from __future__ import annotations

import secrets

# The reasons an agent can pick, by form value; the label is shown and starts the message.
REASONS: dict[str, str] = {
    "password-reset": "Password reset",
    "change-of-address": "Change of address",
}
CODE_ALPHABET = "ACDEFGHJKMNPQRTUVWXY34679"
CODE_LENGTH = 4


def readback_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def binding_message(agent_name: str, reason: str, code: str) -> str:
    """``"Agent 42: password reset, code K7Q2"``."""
    return f"{agent_name}: {REASONS[reason].lower()}, code {code}"


def done_label(reason: str) -> str:
    """What the agent confirms once the verified request is carried out."""
    return f"{REASONS[reason]} done"
