"""Device public keys are parsed once per distinct key, and each JWK gets its own key."""

from __future__ import annotations

import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey

from backchannel.authenticator.device_keys import import_ec_key


def public(key: ECKey) -> dict[str, str]:
    return {k: str(v) for k, v in key.as_dict(private=False).items()}


def test_a_device_key_is_parsed_once() -> None:
    jwk = public(ECKey.generate_key("P-256", private=True))
    assert import_ec_key(jwk) is import_ec_key(dict(reversed(list(jwk.items()))))


def test_each_jwk_gets_the_key_it_describes() -> None:
    first, second = (ECKey.generate_key("P-256", private=True) for _ in range(2))
    token = jws.serialize_compact({"alg": "ES256"}, b"decision", first, algorithms=["ES256"])
    first_key, second_key = import_ec_key(public(first)), import_ec_key(public(second))
    assert first_key is not second_key
    assert first_key.thumbprint() == first.thumbprint()
    assert second_key.thumbprint() == second.thumbprint()
    assert jws.deserialize_compact(token, first_key, algorithms=["ES256"]).payload == b"decision"
    with pytest.raises(BadSignatureError):
        jws.deserialize_compact(token, second_key, algorithms=["ES256"])
