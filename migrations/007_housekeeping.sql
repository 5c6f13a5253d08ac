-- The housekeeper (backchannel/housekeeping.py) deletes settled push messages
-- oldest first once they are past the retention period.
CREATE INDEX push_outbox_created ON push_outbox (created_at);
