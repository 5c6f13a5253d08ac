"""The tamper-evident audit trail (hash chain, sealer) and approval receipts.

See docs/audit.md.
"""
