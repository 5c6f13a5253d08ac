-- Number matching: the approval screen offers several numbers and the user
-- must pick the one the relying party's screen shows.
ALTER TABLE clients ADD COLUMN number_matching boolean NOT NULL DEFAULT false;
ALTER TABLE auth_requests
    ADD COLUMN number_match text,
    ADD COLUMN number_choices text[];
