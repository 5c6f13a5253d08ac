"""What ``backchannel.rp`` offers, and what it does not drag in."""

from __future__ import annotations

import json
import subprocess
import sys

import backchannel.rp

INTENDED = {
    # clients
    "CibaClient",
    "SyncCibaClient",
    "ClientAuth",
    "ClientSecretBasic",
    "ClientSecretPost",
    "PrivateKeyJwt",
    "Clock",
    # results
    "AuthenticationStarted",
    "TokenResponse",
    "ProviderMetadata",
    # notifications
    "Notification",
    "NotificationReceiver",
    "PingNotification",
    "PushedTokens",
    "PushedError",
    "starlette_notification_endpoint",
    "aiohttp_notification_handler",
    # errors
    "RPError",
    "UsageError",
    "TransportError",
    "ProtocolError",
    "InvalidIdToken",
    "OAuthError",
    "AccessDenied",
    "ReportedNotMe",
    "ExpiredToken",
    "TransactionFailed",
    "InvalidGrant",
    "InvalidClient",
}


def test_all_is_exactly_the_intended_public_surface() -> None:
    assert set(backchannel.rp.__all__) == INTENDED
    assert len(backchannel.rp.__all__) == len(INTENDED)
    for name in INTENDED:
        assert getattr(backchannel.rp, name) is not None


def test_every_error_is_an_rp_error_and_oauth_errors_carry_their_wire_code() -> None:
    rp = backchannel.rp
    for name in ("UsageError", "TransportError", "ProtocolError", "InvalidIdToken", "OAuthError"):
        assert issubclass(getattr(rp, name), rp.RPError)
    codes = {
        rp.AccessDenied: "access_denied",
        rp.ExpiredToken: "expired_token",
        rp.TransactionFailed: "transaction_failed",
        rp.InvalidGrant: "invalid_grant",
        rp.InvalidClient: "invalid_client",
    }
    for error_class, code in codes.items():
        assert issubclass(error_class, rp.OAuthError)
        assert error_class.error == code
        made = rp.OAuthError.from_code(code, "why", status=400)
        assert type(made) is error_class
        assert (made.error, made.error_description, made.status) == (code, "why", 400)
    other = rp.OAuthError.from_code("unknown_user_id", status=400)
    assert type(other) is rp.OAuthError and other.error == "unknown_user_id"


def test_a_not_me_report_is_an_access_denied_told_apart_by_its_exact_description() -> None:
    rp = backchannel.rp
    report = rp.OAuthError.from_code(
        "access_denied", "the user reported this request as not theirs", status=400
    )
    assert type(report) is rp.ReportedNotMe
    assert isinstance(report, rp.AccessDenied) and report.error == "access_denied"
    for description in ("the request was denied", "The user reported this", None):
        assert type(rp.OAuthError.from_code("access_denied", description)) is rp.AccessDenied
    # Only access_denied carries it: the same text under another code is that code's error.
    expired = rp.OAuthError.from_code("expired_token", rp.ReportedNotMe.description)
    assert type(expired) is rp.ExpiredToken


# Modules loaded by a bare `import aiohttp, joserfc` count as theirs; everything else
# `import backchannel.rp` loads must be the standard library or backchannel.rp itself.
_LOADED = """
import importlib, json, pkgutil, sys
baseline = set(sys.modules)
{imports}
print(json.dumps(sorted(set(sys.modules) - baseline)))
"""


def _loaded_by(imports: str) -> set[str]:
    script = _LOADED.format(imports=imports)
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True
    ).stdout
    return set(json.loads(out))


def _top_level(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


def test_importing_the_library_loads_no_server_module_and_no_server_dependency() -> None:
    allowed = _top_level(_loaded_by("import aiohttp.web, joserfc.jwk, joserfc.jws, joserfc.jwt"))
    loaded = _loaded_by(
        "import backchannel.rp\n"
        "for m in pkgutil.walk_packages(backchannel.rp.__path__, 'backchannel.rp.'):\n"
        "    importlib.import_module(m.name)"
    )
    ours = {m for m in loaded if m.split(".")[0] == "backchannel"}
    assert "backchannel.rp.sync" in ours and "backchannel.rp.receiver" in ours
    assert {m for m in ours if not m.startswith("backchannel.rp")} <= {"backchannel"}
    foreign = {
        top
        for top in _top_level(loaded) - allowed - {"backchannel"}
        if top not in sys.stdlib_module_names and not top.startswith("_")
    }
    assert foreign == set(), f"backchannel.rp needs more than aiohttp and joserfc: {foreign}"
