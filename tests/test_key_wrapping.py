"""Private keys at rest: wrapped under the key-encryption key, bound to their rows."""

from __future__ import annotations

import asyncpg
import pytest
from joserfc import jwk, jwt

from backchannel.db.users import User
from backchannel.key_wrapping import KeyWrapError, KeyWrapper, new_kek, parse_kek
from backchannel.oauth.keys import new_private_jwk
from backchannel.settings import Settings, SettingsError
from tests.conftest import RegisteredClient, start_app
from tests.support.tokens import issue_tokens_for

ROW = "vapid_keys:kid-1"


def wrapper() -> KeyWrapper:
    return KeyWrapper(parse_kek(new_kek()))


def test_a_wrapped_value_unwraps_only_for_its_row_and_key() -> None:
    kek = wrapper()
    stored = kek.wrap("-----BEGIN PRIVATE KEY-----", ROW)
    assert stored.startswith("bcwrap1.") and "PRIVATE" not in stored
    assert kek.unwrap(stored, ROW) == "-----BEGIN PRIVATE KEY-----"
    with pytest.raises(KeyWrapError, match="does not verify"):
        kek.unwrap(stored, "vapid_keys:kid-2")
    with pytest.raises(KeyWrapError, match="another key-encryption key"):
        wrapper().unwrap(stored, ROW)
    with pytest.raises(KeyWrapError, match="BACKCHANNEL_KEY_ENCRYPTION_KEY"):
        KeyWrapper(None).unwrap(stored, ROW)
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(KeyWrapError):
        kek.unwrap(tampered, ROW)


def test_values_stored_before_a_key_was_set_are_read_as_they_are() -> None:
    assert wrapper().unwrap("plain pem", ROW) == "plain pem"
    assert KeyWrapper(None).wrap("plain pem", ROW) == "plain pem"


def test_a_wrapped_jwk_keeps_only_public_members_in_clear() -> None:
    kek = wrapper()
    private = new_private_jwk("ES256")
    stored = kek.wrap_jwk(private)
    assert set(stored) == {"kty", "crv", "x", "y", "kid", "alg", "use", "wrapped"}
    assert kek.unwrap_jwk(stored) == private
    moved = {**stored, "kid": "another"}
    with pytest.raises(KeyWrapError):
        kek.unwrap_jwk(moved)


def test_a_previous_key_unwraps_but_only_the_current_one_wraps() -> None:
    old, new = parse_kek(new_kek()), parse_kek(new_kek())
    stored = KeyWrapper(old).wrap("secret", ROW)
    rotated = KeyWrapper(new, [old])
    assert rotated.unwrap(stored, ROW) == "secret"
    assert not rotated.wrapped_by_current(stored)
    rewrapped = rotated.wrap("secret", ROW)
    assert rotated.wrapped_by_current(rewrapped)
    assert KeyWrapper(new).unwrap(rewrapped, ROW) == "secret"
    with pytest.raises(KeyWrapError, match="KEY_ENCRYPTION_KEYS_PREVIOUS"):
        KeyWrapper(new).unwrap(stored, ROW)


def test_key_settings_keep_their_case_and_previous_keys_need_a_current_one() -> None:
    old, new = new_kek(), new_kek()
    settings = Settings.from_env(
        {
            "BACKCHANNEL_KEY_ENCRYPTION_KEY": new,
            "BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS": f" {old} ",
        }
    )
    assert settings.key_encryption_keys_previous == (old,)
    wrapper = KeyWrapper.from_settings(settings)
    assert wrapper.unwrap(KeyWrapper(parse_kek(old)).wrap("x", ROW), ROW) == "x"
    with pytest.raises(SettingsError, match="needs BACKCHANNEL_KEY_ENCRYPTION_KEY"):
        Settings.from_env({"BACKCHANNEL_KEY_ENCRYPTION_KEYS_PREVIOUS": old})


@pytest.mark.parametrize(
    "value",
    ["short", "!!!not-base64!!!", new_kek() + "AAAA"],
    ids=["short", "not-base64", "35-bytes"],  # stable across runs and parallel workers
)
def test_settings_refuse_a_key_that_is_not_32_bytes_of_base64url(value: str) -> None:
    with pytest.raises(SettingsError, match="KEY_ENCRYPTION_KEY"):
        Settings(key_encryption_key=value).validate()


async def test_with_a_key_the_service_stores_its_keys_wrapped_and_still_signs(
    settings: Settings,
    db: asyncpg.Connection,
    rp: RegisteredClient,
    alice: User,
) -> None:
    kek = new_kek()
    wrapped_settings = settings.replace(key_encryption_key=kek)
    async for running in start_app(wrapped_settings):
        tokens = await issue_tokens_for(running.services, rp, alice)
        keys = jwk.KeySet.import_key_set((await running.http.get("/jwks")).json())
        assert jwt.decode(tokens["id_token"], keys).claims["sub"] == alice.subject
    for stored in await db.fetch("SELECT private_jwk FROM signing_keys"):
        assert "d" not in stored["private_jwk"]
        assert stored["private_jwk"]["wrapped"].startswith("bcwrap1.")
    pem = await db.fetchval("SELECT private_pem FROM vapid_keys WHERE status = 'active'")
    assert pem.startswith("bcwrap1.")

    with pytest.raises(Exception, match="BACKCHANNEL_KEY_ENCRYPTION_KEY"):
        async for _running in start_app(settings):  # the key is needed to start
            pass


async def test_a_wrapped_vapid_key_signs_pushes(settings: Settings, db: asyncpg.Connection) -> None:
    from backchannel.delivery.vapid import VapidSigners, ensure_vapid_key

    kek = wrapper()
    key = await ensure_vapid_key(db, kek)
    signer = await VapidSigners(kek).get(db, key.kid)
    assert signer is not None
    headers = signer.sign({"sub": "mailto:ops@example.com", "aud": "https://push.example.net"})
    assert headers["Authorization"].startswith("vapid t=")
    with pytest.raises(KeyWrapError):
        await VapidSigners().get(db, key.kid)
