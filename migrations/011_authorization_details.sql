-- Rich authorization requests (RFC 9396): the types a client may send, the types
-- an operator registered (with their JSON Schema; payment_initiation is built in),
-- and the details a request carried, shown to the user and approved as sent.
ALTER TABLE clients ADD COLUMN authorization_details_types text[] NOT NULL DEFAULT '{}';

CREATE TABLE authorization_detail_types (
    type        text PRIMARY KEY CHECK (type ~ '^[A-Za-z0-9_.:/-]{1,128}$'),
    schema      jsonb NOT NULL,
    description text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE auth_requests ADD COLUMN authorization_details jsonb;
