"""Persistence: plain SQL, one statement per function, connection first.

Functions take an asyncpg connection (or pool) as their first argument and
return frozen dataclasses or plain values. No protocol decisions live here
beyond what one conditional statement expresses.
"""
