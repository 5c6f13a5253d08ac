-- The push authenticator: VAPID keys, enrolment codes, devices (phones holding
-- a non-extractable signing key and a Web Push subscription), and the outbox
-- of push messages written in the same transaction as the state they announce.

CREATE TABLE vapid_keys (
    kid          text PRIMARY KEY,
    private_pem  text NOT NULL,
    -- base64url of the uncompressed P-256 point: the browser's applicationServerKey.
    public_key   text NOT NULL UNIQUE,
    status       text NOT NULL CHECK (status IN ('active', 'previous', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz,
    retired_at   timestamptz
);
CREATE UNIQUE INDEX vapid_keys_one_active ON vapid_keys ((true)) WHERE status = 'active';

CREATE TABLE enrolment_codes (
    -- SHA-256 of the one-time code handed to the user as a link / QR code.
    code_hash   bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    issued_by   text NOT NULL,           -- 'cli' or the client_id that asked
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    device_id   text
);
CREATE INDEX enrolment_codes_user ON enrolment_codes (user_id);

CREATE TABLE devices (
    device_id     text PRIMARY KEY,
    user_id       bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    name          text NOT NULL,
    -- The device's public ECDSA P-256 key (JWK) and its RFC 7638 thumbprint.
    public_jwk    jsonb NOT NULL,
    jwk_thumbprint text NOT NULL UNIQUE,
    -- The Web Push subscription; endpoint NULL once the push service says it is gone.
    push_endpoint text,
    push_p256dh   text,
    push_auth     text,
    vapid_kid     text REFERENCES vapid_keys (kid),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz,
    removed_at    timestamptz
);
CREATE INDEX devices_user_active ON devices (user_id) WHERE removed_at IS NULL;

-- Per-request challenge the device signs over, and when its prompts were withdrawn.
ALTER TABLE auth_requests
    ADD COLUMN device_challenge text,
    ADD COLUMN prompts_withdrawn_at timestamptz;
CREATE INDEX auth_requests_unwithdrawn ON auth_requests (expires_at)
    WHERE prompts_withdrawn_at IS NULL;

CREATE TABLE push_outbox (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id       text NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
    auth_request_id bigint REFERENCES auth_requests (id),
    kind            text NOT NULL CHECK (kind IN ('prompt', 'dismiss')),
    -- Web Push Topic: a later message with the same topic replaces an undelivered one.
    topic           text NOT NULL,
    payload         jsonb NOT NULL,
    -- The message is worthless after this instant (its request's expiry).
    deliver_before  timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
        CHECK (status IN ('queued', 'sent', 'failed', 'dropped')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- Lease taken by the worker sending it; another replica skips it meanwhile.
    leased_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    sent_at         timestamptz,
    last_error      text
);
CREATE INDEX push_outbox_due ON push_outbox (next_attempt_at) WHERE status = 'queued';
CREATE INDEX push_outbox_request ON push_outbox (auth_request_id);

-- Relying parties allowed to obtain enrolment codes for users through the admin API.
ALTER TABLE clients ADD COLUMN may_enrol_users boolean NOT NULL DEFAULT false;
