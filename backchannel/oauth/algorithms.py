"""The JOSE algorithms accepted and used, in one place (also published in discovery)."""

from __future__ import annotations

# Signed authentication requests (CIBA §7.1.1): asymmetric only. RS256 is accepted
# only from a client that registered it as its request signing algorithm.
REQUEST_OBJECT_ALGS: tuple[str, ...] = ("ES256", "PS256", "EdDSA")
REQUEST_OBJECT_ALGS_BY_REGISTRATION: tuple[str, ...] = (*REQUEST_OBJECT_ALGS, "RS256")

# private_key_jwt client assertions (RFC 7523).
CLIENT_ASSERTION_ALGS: tuple[str, ...] = ("ES256", "PS256", "RS256", "EdDSA")

# What the server signs with: ID tokens per client, access tokens with ES256.
SIGNING_ALGS: tuple[str, ...] = ("ES256", "PS256", "RS256")
ACCESS_TOKEN_ALG = "ES256"

# login_hint_token issuers' signatures.
LOGIN_HINT_TOKEN_ALGS: tuple[str, ...] = ("ES256", "PS256", "RS256", "EdDSA")
