"""Number matching against push fatigue: the relying party shows a number, the
phone offers it among decoys, and only the right pick approves.

The number is drawn at random when the request is created and returned to the
relying party in the ``/bc-authorize`` response (``number_match``). The phone
sees the choices but not which one is right, so tapping "Approve" on a prompt
the user did not expect fails two times in three.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

CHOICES = 3


@dataclass(frozen=True)
class NumberMatch:
    number: str
    choices: tuple[str, ...]


def new_number_match() -> NumberMatch:
    """A two-digit number and CHOICES distinct two-digit choices, in random order."""
    pool = [f"{n:02d}" for n in range(10, 100)]
    picked: list[str] = []
    while len(picked) < CHOICES:
        candidate = secrets.choice(pool)
        if candidate not in picked:
            picked.append(candidate)
    number = picked[0]
    order = sorted(picked, key=lambda _n: secrets.randbits(32))
    return NumberMatch(number, tuple(order))
