-- No statement looks requests up by expiry alone: the prompt-withdrawal sweep reads
-- auth_requests_unwithdrawn, the notification sweep starts from client_notifications,
-- and everything else goes by id, id_hash or user. Every new request paid for this
-- index entry.
DROP INDEX IF EXISTS auth_requests_expires;
