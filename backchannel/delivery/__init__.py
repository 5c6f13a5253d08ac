"""Delivery of what the server tells the outside world: Web Push messages to the
authenticator app (RFC 8030, 8291, 8292), queued in ``push_outbox`` by the
transaction that makes them necessary and sent by :class:`OutboxWorker`.
"""
