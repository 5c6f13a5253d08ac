-- FAPI-CIBA for banks: DPoP (RFC 9449), mutual TLS (RFC 8705) and a per-client profile.

-- Client authentication by TLS certificate (RFC 8705 §2): no secret, and either a
-- registered certificate subject (tls_client_auth) or the public keys the
-- self-signed certificate must carry (self_signed_tls_client_auth).
ALTER TABLE clients DROP CONSTRAINT clients_token_endpoint_auth_method_check;
ALTER TABLE clients DROP CONSTRAINT clients_check;
ALTER TABLE clients ADD CONSTRAINT clients_token_endpoint_auth_method_check
    CHECK (token_endpoint_auth_method IN
           ('client_secret_basic', 'client_secret_post', 'private_key_jwt',
            'tls_client_auth', 'self_signed_tls_client_auth'));
ALTER TABLE clients ADD CONSTRAINT clients_secret_check
    CHECK (secret_hash IS NOT NULL OR token_endpoint_auth_method NOT IN
           ('client_secret_basic', 'client_secret_post'));

ALTER TABLE clients
    ADD COLUMN tls_client_auth_subject_dn text,
    ADD COLUMN tls_client_auth_san_dns text,
    ADD COLUMN tls_client_auth_san_uri text,
    ADD COLUMN tls_client_auth_san_ip text,
    ADD COLUMN tls_client_auth_san_email text,
    ADD COLUMN tls_client_certificate_bound_access_tokens boolean NOT NULL DEFAULT false,
    ADD COLUMN dpop_bound_access_tokens boolean NOT NULL DEFAULT false,
    ADD COLUMN require_dpop_nonce boolean NOT NULL DEFAULT false,
    -- A security profile the server enforces for this client (oauth/fapi_ciba.py).
    ADD COLUMN profile text CHECK (profile IN ('fapi-ciba'));

-- What a token is bound to: the RFC 7638 thumbprint of the client's DPoP key
-- (cnf.jkt), the SHA-256 thumbprint of its TLS certificate (cnf.x5t#S256).
ALTER TABLE access_tokens
    ADD COLUMN dpop_jkt text,
    ADD COLUMN x5t_s256 text;
-- A refresh token family obtained with a DPoP proof stays bound to that key:
-- every refresh needs a proof signed by it. Each rotated token carries it on.
ALTER TABLE refresh_tokens ADD COLUMN dpop_jkt text;

-- Secrets the service makes for itself at first start, the same for every replica
-- (the key of the DPoP nonces).
CREATE TABLE service_secrets (
    name       text PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
