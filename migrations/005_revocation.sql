-- Central revocation (docs/operations.md, Revocation): tokens are traced to the
-- request whose approval produced them, so that revoking a device revokes the
-- tokens from the approvals it gave.

-- A client without the refresh_token grant gets access tokens with no family;
-- the request they came from is recorded on the token itself.
ALTER TABLE access_tokens ADD COLUMN auth_request_id bigint REFERENCES auth_requests (id);
UPDATE access_tokens a SET auth_request_id = r.auth_request_id
  FROM refresh_tokens r
 WHERE a.auth_request_id IS NULL AND r.family_id = a.family_id AND r.auth_request_id IS NOT NULL;
CREATE INDEX access_tokens_auth_request ON access_tokens (auth_request_id);
CREATE INDEX refresh_tokens_auth_request ON refresh_tokens (auth_request_id);
CREATE INDEX auth_requests_decided_by_device ON auth_requests (decided_by_device)
    WHERE decided_by_device IS NOT NULL;
