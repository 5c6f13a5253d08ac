"""What the agent typed to name the caller, as a typed ``login_hint`` (CIBA §7.1).

One field takes an email address, a phone number in international form or an
account number; its shape says which, and the hint sent says so too
(``email:…``, ``tel:…``, ``account:…``), so the provider never has to guess.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_PHONE = re.compile(r"\+[0-9]{8,15}")
_ACCOUNT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# kind: (shown as, login_hint prefix)
_KINDS = {
    "email": ("Email", "email:"),
    "phone": ("Phone", "tel:"),
    "account": ("Account", "account:"),
}


@dataclass(frozen=True)
class CallerId:
    kind: str  # email | phone | account
    value: str

    @property
    def login_hint(self) -> str:
        return _KINDS[self.kind][1] + self.value

    @property
    def kind_label(self) -> str:
        return _KINDS[self.kind][0]


def parse_caller(text: str) -> CallerId:
    """The caller's identifier; ValueError with a message for the agent if it is none."""
    value = unicodedata.normalize("NFC", text.strip())
    if not value:
        raise ValueError("Enter the caller's email, phone number or account number.")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in value):
        raise ValueError("That contains invisible or control characters; type it again.")
    if "@" in value:
        local, _, domain = value.rpartition("@")
        if not local or "." not in domain or len(value) > 254 or " " in value:
            raise ValueError("That email address is not complete, e.g. alice@example.com.")
        return CallerId("email", value.lower())
    if value.startswith("+"):
        number = _PHONE_SEPARATORS.sub("", value.replace("(0)", ""))
        if not _PHONE.fullmatch(number):
            raise ValueError("Phone numbers need the country code: + and 8 to 15 digits.")
        return CallerId("phone", number)
    if _ACCOUNT.fullmatch(value):
        return CallerId("account", value)
    raise ValueError(
        "Enter an email address, a phone number starting with + and the country code, "
        "or an account number."
    )
