-- Governance at /bc-authorize (docs/policy.md): user groups, allow/deny rules,
-- prompt mutes after "this wasn't me", and client auto-suspension.

-- Groups a user belongs to, for group-based rules. Names are free-form labels
-- (typically mirrored from a directory), compared exactly.
CREATE TABLE user_groups (
    user_id    bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    group_name text NOT NULL CHECK (group_name ~ '^[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}$'),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, group_name)
);
CREATE INDEX user_groups_group ON user_groups (group_name);

-- Policy rules. ``target`` and ``conditions`` hold the validated condition
-- objects of backchannel/policy/rules.py; only the operator CLI writes them,
-- and every change is announced on bc_config ("policy") in its transaction.
CREATE TABLE policies (
    policy_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    effect      text NOT NULL CHECK (effect IN ('allow', 'deny')),
    mode        text NOT NULL CHECK (mode IN ('enforce', 'report-only')),
    enabled     boolean NOT NULL DEFAULT true,
    description text NOT NULL DEFAULT '',
    target      jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(target) = 'object'),
    conditions  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(conditions) = 'object'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- A user's prompts are refused until ``until`` (set after "this wasn't me").
-- ``client_id`` is the client whose request the user reported; the mute
-- covers prompts from every client.
CREATE TABLE user_prompt_mutes (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    until      timestamptz NOT NULL,
    reason     text NOT NULL,
    client_id  text REFERENCES clients (client_id) ON DELETE SET NULL,
    auth_request_id bigint REFERENCES auth_requests (id),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_prompt_mutes_user ON user_prompt_mutes (user_id, until);

-- When the client was last suspended automatically for "not me" reports;
-- only reports decided after this count towards the next suspension, so
-- re-enabling a client starts its count afresh.
ALTER TABLE clients ADD COLUMN auto_suspended_at timestamptz;

-- Fatigue caps count a user's requests created in a window.
CREATE INDEX auth_requests_user_created ON auth_requests (user_id, created_at);
-- Auto-suspension counts the users who reported a client's requests.
CREATE INDEX auth_requests_client_not_me ON auth_requests (client_id, decided_at)
    WHERE denial_reason = 'not_me';
