-- Strong customer authentication on the phone (docs/device-api.md, "User verification"):
-- WebAuthn credentials registered by a device, single-use registration challenges,
-- what a request demands (policy or acr_values) and what its approval showed.

-- The WebAuthn user handle (user.id) of each user: random, opaque, stable, so that a
-- platform authenticator files a user's credentials together without learning who it is.
ALTER TABLE users ADD COLUMN webauthn_user_handle bytea UNIQUE;

-- A device's WebAuthn credentials (a device may hold several). The public key is the
-- COSE_Key from the attested credential data, as registered; sign_count only moves
-- forward (a counter going backwards is refused as a possible clone).
CREATE TABLE webauthn_credentials (
    credential_id   bytea PRIMARY KEY CHECK (octet_length(credential_id) BETWEEN 16 AND 1023),
    device_id       text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    public_key      bytea NOT NULL,
    -- The COSE algorithm of public_key (-7 ES256, -8 EdDSA, -257 RS256).
    alg             integer NOT NULL,
    sign_count      bigint NOT NULL CHECK (sign_count >= 0),
    aaguid          uuid NOT NULL,
    transports      text[] NOT NULL DEFAULT '{}',
    -- The attestation statement format, and whether its chain was verified against
    -- the operator's roots (only when BACKCHANNEL_WEBAUTHN_ATTESTATION is direct).
    attestation_format text NOT NULL,
    attested        boolean NOT NULL DEFAULT false,
    -- Backup eligibility (BE) and state (BS) flags at registration: a synced passkey.
    backup_eligible boolean NOT NULL,
    backed_up       boolean NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz
);
CREATE INDEX webauthn_credentials_device ON webauthn_credentials (device_id);

-- Registration challenges: stored as SHA-256, tied to the device that asked,
-- short-lived and spent by the first attempt (successful or not).
CREATE TABLE webauthn_challenges (
    challenge_hash bytea PRIMARY KEY,
    device_id      text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    purpose        text NOT NULL CHECK (purpose IN ('registration')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz
);
CREATE INDEX webauthn_challenges_expires ON webauthn_challenges (expires_at);

-- What a request demands and what its approval showed.
--   user_verification: 'required' (an enforced require-uv rule, or acr_values asking for
--   the strong level), 'would_require' (only report-only rules asked), NULL (neither);
--   acr: the level the request was held to (docs/relying-parties.md, "acr and amr");
--   amr: the methods the approval used (RFC 8176), set with the decision.
ALTER TABLE auth_requests
    ADD COLUMN user_verification text CHECK (user_verification IN ('required', 'would_require')),
    ADD COLUMN acr text,
    ADD COLUMN amr text[];

-- The WebAuthn assertion behind an approval with user verification, and the
-- credential's public key, so that a receipt can be checked by anyone.
ALTER TABLE approval_receipts ADD COLUMN user_verification jsonb;

-- A policy rule may require user verification (docs/policy.md, require-uv).
ALTER TABLE policies
    DROP CONSTRAINT policies_effect_check,
    ADD CONSTRAINT policies_effect_check CHECK (effect IN ('allow', 'deny', 'require-uv'));
