"""Authentication assurance: the ``acr`` levels a request is held to, and ``amr``.

Two levels (docs/relying-parties.md, "acr and amr"):

- ``urn:backchannel:acr:device``: the user approved on their enrolled device,
  which signed the decision with its own key (possession);
- ``urn:backchannel:acr:sca``: as above, and the user verified themselves on the
  device (fingerprint, face or device PIN: WebAuthn user verification) for
  exactly this transaction: strong customer authentication with dynamic linking.

A request is held to the higher of what the client asked for in ``acr_values``
(its first supported value, in the client's order of preference) and what the
policy requires (a ``require-uv`` rule means ``sca``). ``acr_values`` naming no
supported value is ``invalid_request``: a level the server cannot even name
cannot be met.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backchannel.errors import InvalidRequest

ACR_DEVICE = "urn:backchannel:acr:device"
ACR_SCA = "urn:backchannel:acr:sca"
ACR_VALUES_SUPPORTED: tuple[str, ...] = (ACR_DEVICE, ACR_SCA)
_LEVELS = {ACR_DEVICE: 1, ACR_SCA: 2}

# RFC 8176 authentication method references.
AMR_SOFTWARE_KEY = "swk"  # the device's decision key (WebCrypto, non-extractable)
AMR_HARDWARE_KEY = "hwk"  # a WebAuthn credential attested as hardware-bound
AMR_USER = "user"  # the user was there and verified (WebAuthn UP and UV)
AMR_MULTI_FACTOR = "mfa"  # possession of the device and the user's biometric or PIN
AMR_SUPPORTED: tuple[str, ...] = (AMR_SOFTWARE_KEY, AMR_HARDWARE_KEY, AMR_USER, AMR_MULTI_FACTOR)


@dataclass(frozen=True)
class Assurance:
    """What a request is held to: its ``acr``, and whether approving needs user
    verification (``required``), would under report-only rules (``would_require``),
    or not (None)."""

    acr: str
    user_verification: str | None


def requested_acr(acr_values: Sequence[str] | None) -> str | None:
    """The client's preferred supported ``acr`` value; ``invalid_request`` if it named
    only values this server does not support."""
    if not acr_values:
        return None
    for value in acr_values:
        if value in _LEVELS:
            return value
    raise InvalidRequest(
        "acr_values names no level this server supports (supported: "
        + " ".join(ACR_VALUES_SUPPORTED)
        + ")"
    )


def request_assurance(acr_values: Sequence[str] | None, policy_uv: str | None) -> Assurance:
    """The level a request is held to, from its ``acr_values`` and the policy's
    ``require-uv`` outcome (``required``, ``would_require`` or None)."""
    requested = requested_acr(acr_values) or ACR_DEVICE
    if policy_uv == "required" or requested == ACR_SCA:
        return Assurance(ACR_SCA, "required")
    return Assurance(ACR_DEVICE, policy_uv)


def acr_claim(held_to: str | None, amr: Sequence[str] | None) -> str | None:
    """The ``acr`` an ID token states: the level the request was held to, once an approval
    on the device met it. None when no device approved (an operator's decision in the
    user's place) or the methods fall short, so a token never claims more than happened."""
    if not amr:
        return None
    achieved = ACR_SCA if AMR_USER in amr else ACR_DEVICE
    required = held_to if held_to in _LEVELS else ACR_DEVICE
    return required if _LEVELS[achieved] >= _LEVELS[required] else None
