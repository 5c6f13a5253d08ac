-- User codes (CIBA §7.1 user_code) are stored as argon2id hashes. Codes stored
-- before as plain SHA-256 keep working, marked "sha256:<hex>", and are rehashed
-- with argon2id the next time the user types them correctly.
ALTER TABLE users ALTER COLUMN user_code_hash TYPE text
    USING CASE WHEN user_code_hash IS NULL THEN NULL
               ELSE 'sha256:' || encode(user_code_hash, 'hex') END;
-- After repeated wrong codes the user's code is refused until then.
ALTER TABLE users ADD COLUMN user_code_locked_until timestamptz;

-- Wrong user codes, counted per user and per client over a window.
CREATE TABLE user_code_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    client_id  text NOT NULL REFERENCES clients (client_id),
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_code_failures_user ON user_code_failures (user_id, at);
CREATE INDEX user_code_failures_client ON user_code_failures (client_id, at);
