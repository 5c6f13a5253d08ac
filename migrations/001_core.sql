-- The CIBA core: clients, users and their login hints, signing keys,
-- backchannel authentication requests, tokens, replay caches and the audit trail.

CREATE TABLE clients (
    client_id                 text PRIMARY KEY,
    name                      text NOT NULL,
    -- SHA-256 of the client secret (secrets are 256-bit random values).
    secret_hash               bytea,
    token_endpoint_auth_method text NOT NULL
        CHECK (token_endpoint_auth_method IN
               ('client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    jwks                      jsonb,
    jwks_uri                  text,
    grant_types               text[] NOT NULL
        DEFAULT ARRAY['urn:openid:params:grant-type:ciba', 'refresh_token'],
    scopes                    text[] NOT NULL DEFAULT ARRAY['openid', 'profile', 'email', 'phone', 'offline_access'],
    backchannel_token_delivery_mode text NOT NULL DEFAULT 'poll'
        CHECK (backchannel_token_delivery_mode IN ('poll', 'ping', 'push')),
    backchannel_client_notification_endpoint text,
    backchannel_authentication_request_signing_alg text,
    require_signed_request    boolean NOT NULL DEFAULT false,
    backchannel_user_code_parameter boolean NOT NULL DEFAULT false,
    id_token_signed_response_alg text NOT NULL DEFAULT 'ES256'
        CHECK (id_token_signed_response_alg IN ('ES256', 'PS256', 'RS256')),
    access_token_ttl          integer CHECK (access_token_ttl > 0),
    refresh_token_ttl         integer CHECK (refresh_token_ttl > 0),
    max_requested_expiry      integer CHECK (max_requested_expiry > 0),
    -- Issuers whose login_hint_token this client may present: [{"iss": ..., "jwks": {...}}].
    login_hint_token_issuers  jsonb NOT NULL DEFAULT '[]'::jsonb,
    created_at                timestamptz NOT NULL DEFAULT now(),
    disabled_at               timestamptz,
    CHECK (secret_hash IS NOT NULL OR token_endpoint_auth_method = 'private_key_jwt'),
    CHECK (token_endpoint_auth_method <> 'private_key_jwt' OR jwks IS NOT NULL OR jwks_uri IS NOT NULL)
);

CREATE TABLE users (
    user_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The stable, non-reassignable subject identifier put in tokens.
    subject      text NOT NULL UNIQUE,
    display_name text NOT NULL DEFAULT '',
    email        text,
    phone_number text,
    -- SHA-256 of the user's user_code (CIBA §7.1), when the user has one.
    user_code_hash bytea,
    created_at   timestamptz NOT NULL DEFAULT now(),
    disabled_at  timestamptz
);

-- Every identifier a relying party may send as login_hint, normalised.
CREATE TABLE user_login_hints (
    kind    text NOT NULL CHECK (kind IN ('email', 'phone', 'account', 'username')),
    value   text NOT NULL,
    user_id bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    PRIMARY KEY (kind, value)
);
CREATE INDEX user_login_hints_user ON user_login_hints (user_id);

CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    alg          text NOT NULL CHECK (alg IN ('ES256', 'PS256', 'RS256')),
    private_jwk  jsonb NOT NULL,
    status       text NOT NULL CHECK (status IN ('active', 'previous', 'retired')),
    created_at   timestamptz NOT NULL DEFAULT now(),
    superseded_at timestamptz,
    retired_at   timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active_per_alg ON signing_keys (alg) WHERE status = 'active';

CREATE TABLE auth_requests (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- SHA-256 of the auth_req_id handed to the client; the value itself is never stored.
    id_hash            bytea NOT NULL UNIQUE,
    client_id          text NOT NULL REFERENCES clients (client_id),
    user_id            bigint NOT NULL REFERENCES users (user_id),
    scope              text[] NOT NULL,
    acr_values         text[],
    binding_message    text,
    delivery_mode      text NOT NULL CHECK (delivery_mode IN ('poll', 'ping', 'push')),
    client_notification_token text,
    requested_expiry   integer,
    status             text NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'redeemed')),
    -- Why a request is denied: user, not_me, poll_abuse, revoked, policy ...
    denial_reason      text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    expires_at         timestamptz NOT NULL,
    decided_at         timestamptz,
    decided_by_device  text,
    redeemed_at        timestamptz,
    -- Poll pacing: the interval a slow_down raises is stored with the poll time.
    poll_interval      integer NOT NULL,
    last_polled_at     timestamptz,
    poll_count         integer NOT NULL DEFAULT 0,
    poll_strikes       integer NOT NULL DEFAULT 0,
    locked_until       timestamptz,
    lock_count         integer NOT NULL DEFAULT 0
);
CREATE INDEX auth_requests_user_pending ON auth_requests (user_id) WHERE status = 'pending';
CREATE INDEX auth_requests_expires ON auth_requests (expires_at);

-- Refresh tokens: opaque, stored as SHA-256, rotated on every use. A family is
-- every token descending from one grant; replaying a rotated token revokes it.
CREATE TABLE refresh_tokens (
    token_hash   bytea PRIMARY KEY,
    family_id    uuid NOT NULL,
    client_id    text NOT NULL REFERENCES clients (client_id),
    user_id      bigint NOT NULL REFERENCES users (user_id),
    auth_request_id bigint REFERENCES auth_requests (id),
    scope        text[] NOT NULL,
    auth_time    timestamptz NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    rotated_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_client ON refresh_tokens (client_id);

-- Access tokens are self-contained JWTs; their jti is recorded so that
-- revocation and introspection see them.
CREATE TABLE access_tokens (
    jti          text PRIMARY KEY,
    family_id    uuid,
    client_id    text NOT NULL REFERENCES clients (client_id),
    user_id      bigint NOT NULL REFERENCES users (user_id),
    scope        text[] NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz
);
CREATE INDEX access_tokens_family ON access_tokens (family_id);
CREATE INDEX access_tokens_user ON access_tokens (user_id);
CREATE INDEX access_tokens_client ON access_tokens (client_id);

-- Replay cache for client assertions and signed authentication requests.
CREATE TABLE used_jtis (
    issuer     text NOT NULL,
    purpose    text NOT NULL,
    jti        text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, purpose, jti)
);
CREATE INDEX used_jtis_expires ON used_jtis (expires_at);

CREATE TABLE audit_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT clock_timestamp(),
    event           text NOT NULL,
    client_id       text,
    user_id         bigint,
    auth_request_id bigint,
    device_id       text,
    detail          jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_at ON audit_events (at);
CREATE INDEX audit_events_auth_request ON audit_events (auth_request_id);
