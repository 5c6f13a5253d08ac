"""What the panel says about an attempt: one place for the page and the live updates.

``view`` is an attempt as the page's script receives it (JSON); the HTML pages
use the same labels and sentences, so a live update reads exactly as a reload.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from examples.call_centre.attempts import Attempt, Identity, Status
from examples.call_centre.binding import REASONS, done_label

LABELS: dict[Status, str] = {
    Status.WAITING: "Waiting",
    Status.VERIFIED: "Verified",
    Status.DENIED: "Denied",
    Status.NOT_ME: "Not the caller",
    Status.EXPIRED: "Expired",
    Status.NO_MATCH: "No match",
    Status.REFUSED: "Refused",
    Status.FAILED: "Failed",
}

_SENTENCES: dict[Status, str] = {
    Status.WAITING: "Waiting for the caller to approve on their phone.",
    Status.VERIFIED: "The caller approved on their phone. Identity verified.",
    Status.DENIED: "The caller denied the request on their phone. Do not go ahead.",
    Status.NOT_ME: (
        "The caller's phone says it wasn't them: the account holder did not ask for this. "
        "Do not go ahead, and report the call as possible fraud."
    ),
    Status.EXPIRED: "The request expired before the caller answered. Start again if needed.",
    Status.NO_MATCH: "No customer has that email, phone number or account number.",
    Status.REFUSED: "The verification service would not prompt this customer now.",
    Status.FAILED: "The verification could not be completed.",
}

# The ID token's acr (docs/relying-parties.md, "acr and amr").
_METHODS = {
    "urn:backchannel:acr:sca": "Phone, with fingerprint, face or PIN",
    "urn:backchannel:acr:device": "Phone",
}


def sentence(attempt: Attempt) -> str:
    text = _SENTENCES[attempt.status]
    if attempt.detail and attempt.status in (Status.REFUSED, Status.FAILED):
        text = f"{text} ({attempt.detail})"
    return text


def reason_label(attempt: Attempt) -> str:
    return REASONS[attempt.reason]


def method(identity: Identity) -> str:
    return _METHODS.get(identity.acr or "", "Phone")


def clock(at: datetime) -> str:
    """``14:02:33 UTC``; the page's script shows it in the agent's own time zone."""
    return at.strftime("%H:%M:%S UTC")


def view(attempt: Attempt) -> dict[str, Any]:
    """The attempt for the page's script."""
    identity = attempt.identity
    return {
        "id": attempt.id,
        "status": attempt.status.value,
        "final": attempt.status.final,
        "label": LABELS[attempt.status],
        "sentence": sentence(attempt),
        "identity": (
            {
                "subject": identity.subject,
                "name": identity.name or "(not given)",
                "verified_at": identity.verified_at.isoformat(),
                "verified_at_text": clock(identity.verified_at),
                "method": method(identity),
            }
            if identity is not None
            else None
        ),
        "done": (
            {"label": done_label(attempt.reason), "at": attempt.done_at.isoformat()}
            if attempt.done_at is not None
            else None
        ),
    }
