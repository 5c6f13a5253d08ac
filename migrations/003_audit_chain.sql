-- The audit trail becomes tamper-evident (docs/audit.md).
--
-- Rows are still inserted without a hash, so inserts on hot paths never wait
-- for one another. A sealer (one at a time, under an advisory lock) later gives
-- each committed row a consecutive seq and hash = SHA-256(prev_hash || row),
-- and records the newest seal in audit_chain_head. Triggers make the table
-- append-only; the owner or a superuser can still disable them, which is what
-- `backchannel audit verify` detects.

ALTER TABLE audit_events
    ADD COLUMN seq       bigint,
    ADD COLUMN prev_hash bytea,
    ADD COLUMN hash      bytea,
    ADD CONSTRAINT audit_events_seq_unique UNIQUE (seq),
    ADD CONSTRAINT audit_events_sealed_whole CHECK (
        (seq IS NULL AND prev_hash IS NULL AND hash IS NULL)
        OR (seq > 0 AND octet_length(prev_hash) = 32 AND octet_length(hash) = 32));

-- What the sealer reads: unsealed rows in id order.
CREATE INDEX audit_events_unsealed ON audit_events (id) WHERE seq IS NULL;
-- What `backchannel audit list --user / --client` reads.
CREATE INDEX audit_events_user ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
CREATE INDEX audit_events_client ON audit_events (client_id, id) WHERE client_id IS NOT NULL;

-- The newest seal: one row, starting at the genesis (seq 0, 32 zero bytes).
-- It lets verify notice rows cut off the end of the chain.
CREATE TABLE audit_chain_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    seq       bigint NOT NULL CHECK (seq >= 0),
    hash      bytea NOT NULL CHECK (octet_length(hash) = 32),
    sealed_at timestamptz
);
INSERT INTO audit_chain_head (seq, hash) VALUES (0, decode(repeat('00', 32), 'hex'));

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL
       AND to_jsonb(NEW) - ARRAY['seq', 'prev_hash', 'hash']
           = to_jsonb(OLD) - ARRAY['seq', 'prev_hash', 'hash'] THEN
        RETURN NEW;  -- the one-time sealing update
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the sealer may set seq, prev_hash and hash, once';
END
$$;

CREATE TRIGGER audit_events_append_only
    BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate
    BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();

-- The head only moves forward.
CREATE FUNCTION audit_chain_head_forward_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.seq > OLD.seq THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_chain_head only moves forward: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_chain_head_forward_only
    BEFORE UPDATE OR DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_chain_head_forward_only();
CREATE TRIGGER audit_chain_head_no_truncate
    BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_chain_head_forward_only();

-- Approval receipts: what the user's device was shown, what it decided, and its
-- signature over that decision (the decision JWS as received). Written in the
-- decision's transaction; served to the relying party signed by the server.
CREATE TABLE approval_receipts (
    auth_request_id   bigint PRIMARY KEY REFERENCES auth_requests (id),
    device_id         text NOT NULL,
    -- The device's name when it decided (devices can be renamed or removed later).
    device_name       text NOT NULL,
    decision          text NOT NULL CHECK (decision IN ('approve', 'deny', 'not_me')),
    decided_at        timestamptz NOT NULL,
    -- {"client_name", "binding_message", "scope": [...]}
    shown             jsonb NOT NULL,
    device_jws        text NOT NULL,
    device_public_jwk jsonb NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION approval_receipts_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'approval_receipts are immutable: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER approval_receipts_immutable
    BEFORE UPDATE OR DELETE ON approval_receipts
    FOR EACH ROW EXECUTE FUNCTION approval_receipts_immutable();
CREATE TRIGGER approval_receipts_no_truncate
    BEFORE TRUNCATE ON approval_receipts
    FOR EACH STATEMENT EXECUTE FUNCTION approval_receipts_immutable();
