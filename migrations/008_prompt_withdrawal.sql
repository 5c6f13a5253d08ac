-- Each queued prompt carries the message that withdraws it (a ``dismiss``),
-- written by the authenticator when the prompt is queued, so that withdrawing
-- prompts copies a payload instead of composing one in SQL.
ALTER TABLE push_outbox ADD COLUMN withdrawal jsonb;

UPDATE push_outbox o
   SET withdrawal = jsonb_build_object('type', 'dismiss', 'ref', encode(r.id_hash, 'hex'))
  FROM auth_requests r
 WHERE r.id = o.auth_request_id AND o.kind = 'prompt';

ALTER TABLE push_outbox ADD CONSTRAINT push_outbox_prompt_withdrawal
    CHECK (kind <> 'prompt' OR withdrawal IS NOT NULL);
