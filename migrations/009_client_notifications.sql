-- Ping and push token delivery (CIBA Core §10.2, §10.3): one row per request of a
-- ping or push client, written with the request. It waits until the request
-- reaches its final state, is then queued (in the transaction of that change, or
-- by the worker's sweep for expiry), and is sent at least once by a worker on
-- any replica. What must be sent back to the client is sealed (wrapped under the
-- key-encryption key when one is set) and erased once delivered or given up.
CREATE TABLE client_notifications (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    auth_request_id    bigint NOT NULL UNIQUE REFERENCES auth_requests (id) ON DELETE CASCADE,
    client_id          text NOT NULL REFERENCES clients (client_id),
    mode               text NOT NULL CHECK (mode IN ('ping', 'push')),
    auth_req_id_sealed text,
    bearer_sealed      text,
    -- Push: the token response, minted once, resent as it is by every retry.
    response_sealed    text,
    status             text NOT NULL DEFAULT 'waiting'
        CHECK (status IN ('waiting', 'queued', 'sent', 'failed', 'given_up')),
    outcome            text CHECK (outcome IN ('approved', 'denied', 'expired')),
    denial_reason      text,
    -- When the request ended; the notification is given up a set time after it.
    due_at             timestamptz,
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,
    leased_until       timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    sent_at            timestamptz,
    last_status        integer,
    last_error         text
);
CREATE INDEX client_notifications_due ON client_notifications (next_attempt_at)
    WHERE status = 'queued';
CREATE INDEX client_notifications_waiting ON client_notifications (auth_request_id)
    WHERE status = 'waiting';
CREATE INDEX client_notifications_created ON client_notifications (created_at);

-- The notification token lives sealed in client_notifications now.
ALTER TABLE auth_requests DROP COLUMN client_notification_token;
