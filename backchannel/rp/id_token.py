"""ID token verification (OIDC Core §3.1.3.7, §2; CIBA §10.3.1).

The signature must verify with one of the provider's published keys, under an
asymmetric algorithm the provider advertises; then ``iss``, ``aud`` (and
``azp``), ``exp``, ``iat``, ``nbf``, the ``auth_req_id`` claim and the
``at_hash`` / ``rt_hash`` token hashes are checked. Any failure is
:class:`InvalidIdToken`, whose ``reason`` names the check.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError

from backchannel.rp.algorithms import token_hash
from backchannel.rp.errors import InvalidIdToken
from backchannel.rp.jwks import ProviderKeys

AUTH_REQ_ID_CLAIM = "urn:openid:params:jwt:claim:auth_req_id"
RT_HASH_CLAIM = "urn:openid:params:jwt:claim:rt_hash"
_ACCESS_TOKEN_TYPES = ("at+jwt", "application/at+jwt")


@dataclass(frozen=True)
class Expected:
    """What an ID token must show.

    ``auth_req_id``: the CIBA claim must be present and equal (CIBA §10.1.1, §10.3.1).
    ``access_token`` / ``refresh_token``: checked against ``at_hash`` / ``rt_hash``
    when the token carries them; ``hashes_required`` (push mode, CIBA §10.3.1)
    makes ``at_hash``, and ``rt_hash`` with a refresh token, mandatory.
    """

    issuer: str
    client_id: str
    algorithms: Sequence[str]
    now: float
    skew: float
    auth_req_id: str | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    hashes_required: bool = False


@dataclass(frozen=True)
class _Signed:
    alg: str
    curve: str | None  # of the key that verified it (EdDSA's hash depends on it)
    claims: dict[str, Any]


async def verify_id_token(token: str, keys: ProviderKeys, expected: Expected) -> dict[str, Any]:
    """The claims of ``token`` once every check has passed."""
    signed = await _verified_jws(token, keys, expected.algorithms)
    check_claims(signed.claims, signed.alg, signed.curve, expected)
    return signed.claims


async def _verified_jws(token: str, keys: ProviderKeys, algorithms: Sequence[str]) -> _Signed:
    if not isinstance(token, str) or token.count(".") != 2:
        raise InvalidIdToken("not a compact JWS")
    try:
        header = dict(jws.extract_compact(token.encode("ascii")).protected)
    except (JoseError, ValueError, TypeError):
        raise InvalidIdToken("the header cannot be read") from None
    alg, kid = header.get("alg"), header.get("kid")
    if not isinstance(alg, str) or alg not in algorithms:
        raise InvalidIdToken(f"algorithm {alg!r} is not accepted")
    if kid is not None and not isinstance(kid, str):
        raise InvalidIdToken("kid is not a string")
    if "crit" in header:
        raise InvalidIdToken("critical header extensions are not understood")
    if str(header.get("typ", "")).lower() in _ACCESS_TOKEN_TYPES:
        raise InvalidIdToken("this is an access token, not an ID token")
    candidates = await keys.candidates(kid, alg)
    if not candidates:
        raise InvalidIdToken(f"the provider publishes no {alg} key with kid {kid!r}")
    for key in candidates:
        try:
            payload = jws.deserialize_compact(token, key, algorithms=[alg]).payload
        except BadSignatureError:
            continue
        except (JoseError, ValueError, TypeError):
            raise InvalidIdToken("the JWS is malformed") from None
        try:
            claims = json.loads(payload)
        except ValueError:
            raise InvalidIdToken("the payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidIdToken("the payload is not a JSON object")
        curve = key.get("crv")
        return _Signed(alg, curve if isinstance(curve, str) else None, claims)
    raise InvalidIdToken("the signature does not verify")


def _number(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidIdToken(f"{name} is missing or not a number")
    return float(value)


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def check_claims(
    claims: Mapping[str, Any], alg: str, curve: str | None, expected: Expected
) -> None:
    """The claim checks of OIDC Core §3.1.3.7 (items 2–3, 9–10) and CIBA §10.3.1."""
    if claims.get("iss") != expected.issuer:
        raise InvalidIdToken(f"iss {claims.get('iss')!r} is not {expected.issuer!r}")
    if not isinstance(claims.get("sub"), str) or not claims["sub"]:
        raise InvalidIdToken("sub is missing")
    _check_audience(claims, expected.client_id)

    now, skew = expected.now, expected.skew
    if now >= _number(claims, "exp") + skew:
        raise InvalidIdToken("it has expired (exp)")
    if _number(claims, "iat") > now + skew:
        raise InvalidIdToken("it was issued in the future (iat)")
    if "nbf" in claims and _number(claims, "nbf") > now + skew:
        raise InvalidIdToken("it is not valid yet (nbf)")

    if expected.auth_req_id is not None:
        claim = claims.get(AUTH_REQ_ID_CLAIM)
        if not isinstance(claim, str) or not _same(claim, expected.auth_req_id):
            raise InvalidIdToken(f"{AUTH_REQ_ID_CLAIM} does not name this auth_req_id")

    _check_hash(claims, "at_hash", expected.access_token, alg, curve, expected.hashes_required)
    _check_hash(claims, RT_HASH_CLAIM, expected.refresh_token, alg, curve, expected.hashes_required)


def _check_audience(claims: Mapping[str, Any], client_id: str) -> None:
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise InvalidIdToken("aud is missing or malformed")
    if client_id not in audiences:
        raise InvalidIdToken(f"aud does not contain the client_id {client_id!r}")
    azp = claims.get("azp")
    if len(audiences) > 1 and azp is None:
        raise InvalidIdToken("several audiences but no azp")
    if azp is not None and azp != client_id:
        raise InvalidIdToken(f"azp {azp!r} is not the client_id")


def _check_hash(
    claims: Mapping[str, Any],
    name: str,
    token: str | None,
    alg: str,
    curve: str | None,
    required: bool,
) -> None:
    value = claims.get(name)
    if token is None:
        return
    if value is None:
        if required:
            raise InvalidIdToken(f"{name} is required here")
        return
    try:
        computed = token_hash(token, alg, curve)
    except (ValueError, UnicodeEncodeError):
        raise InvalidIdToken(f"{name} cannot be computed for {alg}") from None
    if not isinstance(value, str) or not _same(value, computed):
        raise InvalidIdToken(f"{name} does not match the token")
