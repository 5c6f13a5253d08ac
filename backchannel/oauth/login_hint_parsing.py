"""Reading a ``login_hint`` (CIBA §7.1) into normalised identifiers; no I/O.

A hint may be typed (``mailto:``, ``email:``, ``tel:``, ``account:``,
``username:``) or bare, in which case its shape decides. The same
normalisation is used when provisioning users, so stored and presented
identifiers compare equal.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

from backchannel.db.users import LoginHint

HINT_KINDS: tuple[str, ...] = ("email", "phone", "account", "username")
MAX_HINT_LENGTH = 256
MAX_EMAIL_LENGTH = 254
MAX_ACCOUNT_LENGTH = 64
MAX_USERNAME_LENGTH = 64

_PREFIXES: dict[str, str] = {
    "mailto:": "email",
    "email:": "email",
    "tel:": "phone",
    "phone:": "phone",
    "account:": "account",
    "username:": "username",
}
_PHONE_SEPARATORS = re.compile(r"[\s\-.()]")
_E164 = re.compile(r"\+[0-9]{8,15}")
_PHONE_LIKE = re.compile(r"\+[0-9\s\-.()]+")
_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9._-]*")
_DOMAIN_LABEL = re.compile(r"[^\s.@]+")
# Control, format (zero-width, bidi overrides), surrogate and separator characters.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _has_unsafe_characters(value: str) -> bool:
    if value.isascii() and value.isprintable():  # the common case, without a per-character walk
        return False
    return any(unicodedata.category(ch) in _UNSAFE_CATEGORIES for ch in value)


def normalise_hint(kind: str, value: str) -> LoginHint:
    """The stored form of ``value`` as an identifier of ``kind``; ValueError if invalid."""
    if kind not in HINT_KINDS:
        raise ValueError(f"unknown login hint kind {kind!r}; use one of {', '.join(HINT_KINDS)}")
    if _has_unsafe_characters(value):
        raise ValueError(f"{kind} contains control or invisible characters")
    value = unicodedata.normalize("NFC", value.strip())
    if not value:
        raise ValueError(f"{kind} is empty")
    return LoginHint(kind, _NORMALISERS[kind](value))


def _email(value: str) -> str:
    value = value.lower()
    local, sep, domain = value.rpartition("@")
    if not sep or not local or not domain or "@" in local:
        raise ValueError("email must look like name@domain")
    if len(value) > MAX_EMAIL_LENGTH:
        raise ValueError(f"email is longer than {MAX_EMAIL_LENGTH} characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("email may not contain spaces")
    if not all(_DOMAIN_LABEL.fullmatch(label) for label in domain.split(".")):
        raise ValueError("email has a malformed domain")
    return value


def _phone(value: str) -> str:
    # "+44 (0)7700 …": the bracketed trunk prefix is not dialled from abroad.
    number = _PHONE_SEPARATORS.sub("", value.replace("(0)", ""))
    if not _E164.fullmatch(number):
        raise ValueError("phone must be in international form: + and 8 to 15 digits")
    return number


def _account(value: str) -> str:
    value = value.lower()
    if len(value) > MAX_ACCOUNT_LENGTH or not _ACCOUNT.fullmatch(value):
        raise ValueError(
            f"account may hold up to {MAX_ACCOUNT_LENGTH} letters, digits, '.', '_' or '-'"
        )
    return value


def _username(value: str) -> str:
    value = value.lower()
    if len(value) > MAX_USERNAME_LENGTH:
        raise ValueError(f"username is longer than {MAX_USERNAME_LENGTH} characters")
    if any(ch.isspace() for ch in value):
        raise ValueError("username may not contain spaces")
    return value


_NORMALISERS = {"email": _email, "phone": _phone, "account": _account, "username": _username}


def parse_login_hint(value: str) -> list[LoginHint]:
    """Candidate identifiers for a ``login_hint``, most likely first; [] if unusable."""
    if len(value) > MAX_HINT_LENGTH or _has_unsafe_characters(value):
        return []
    value = value.strip()
    lowered = value.lower()
    for prefix, kind in _PREFIXES.items():
        if lowered.startswith(prefix):
            rest = value[len(prefix) :]
            if prefix == "mailto:":
                if "?" in rest:
                    return []
                rest = unquote(rest)
            return _candidates((kind,), rest)
    if "@" in value:
        return _candidates(("email",), value)
    if _PHONE_LIKE.fullmatch(value):
        return _candidates(("phone",), value)
    if value.isascii() and value.isdigit():
        return _candidates(("account", "username"), value)
    return _candidates(("username",), value)


def _candidates(kinds: tuple[str, ...], value: str) -> list[LoginHint]:
    hints: list[LoginHint] = []
    for kind in kinds:
        try:
            hints.append(normalise_hint(kind, value))
        except ValueError:
            continue
    return hints
