-- The append-only trigger lets through only the one-time sealing update. It now
-- checks that nothing but seq, prev_hash and hash changed by comparing the rows as
-- records (the new row with its seal fields cleared against the old one) instead of
-- converting both rows to jsonb: the same check, covering any column added later,
-- at about half the cost of sealing a row.
CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unsealed audit_events;
BEGIN
    IF TG_OP = 'UPDATE'
       AND OLD.seq IS NULL AND OLD.prev_hash IS NULL AND OLD.hash IS NULL
       AND NEW.seq IS NOT NULL AND NEW.prev_hash IS NOT NULL AND NEW.hash IS NOT NULL THEN
        unsealed := NEW;
        unsealed.seq := NULL;
        unsealed.prev_hash := NULL;
        unsealed.hash := NULL;
        IF unsealed IS NOT DISTINCT FROM OLD THEN
            RETURN NEW;  -- the one-time sealing update
        END IF;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'only the sealer may set seq, prev_hash and hash, once';
END
$$;
