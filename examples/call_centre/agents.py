"""The agents who may log in to the panel, with argon2id password hashes.

The agents file is TOML, one table per login name::

    [agents.agent42]
    name = "Agent 42"   # how callers hear of them: it starts the binding message
    password_hash = "$argon2id$v=19$m=65536,t=3,p=4$..."

``python -m examples.call_centre hash-password`` makes a hash. Only hashes are
kept; checking a password runs argon2 in a worker thread, and an unknown login
name costs as much as a known one.
"""

from __future__ import annotations

import asyncio
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_LOGIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,39}")
# Printable, no control or bidi characters: it is shown on the caller's phone.
_NAME = re.compile(r"[\w .'-]{1,40}")
_HASHER = PasswordHasher()  # argon2id, RFC 9106's second recommended parameters


@dataclass(frozen=True)
class Agent:
    login: str
    name: str
    password_hash: str = field(repr=False)


def hash_password(password: str) -> str:
    """An argon2id hash of ``password`` for the agents file."""
    return _HASHER.hash(password)


class AgentDirectory:
    """The agents, by login name."""

    def __init__(self, agents: Iterable[Agent]) -> None:
        self._agents: dict[str, Agent] = {}
        for agent in agents:
            if not _LOGIN.fullmatch(agent.login):
                raise ValueError(
                    f"login name {agent.login!r}: use 1 to 40 lower-case letters, digits, . _ -"
                )
            if not _NAME.fullmatch(agent.name) or agent.name != agent.name.strip():
                raise ValueError(
                    f"agent {agent.login}: name must be 1 to 40 letters, digits, spaces or .'-"
                )
            if not agent.password_hash.startswith("$argon2id$"):
                raise ValueError(f"agent {agent.login}: password_hash must be an argon2id hash")
            self._agents[agent.login] = agent
        if not self._agents:
            raise ValueError("no agents are configured")
        self._decoy = next(iter(self._agents.values())).password_hash

    @classmethod
    def from_toml(cls, path: Path) -> AgentDirectory:
        with path.open("rb") as file:
            data = tomllib.load(file)
        tables = data.get("agents")
        if not isinstance(tables, dict):
            raise ValueError("the file has no [agents.LOGIN] tables")
        agents = []
        for login, table in tables.items():
            name, password_hash = table.get("name"), table.get("password_hash")
            if not isinstance(name, str) or not isinstance(password_hash, str):
                raise ValueError(f"agent {login}: name and password_hash must be strings")
            agents.append(Agent(login, name, password_hash))
        return cls(agents)

    def get(self, login: str) -> Agent | None:
        return self._agents.get(login)

    async def authenticate(self, login: str, password: str) -> Agent | None:
        """The agent whose login name and password these are, else None."""
        agent = self._agents.get(login.strip().lower())
        stored = agent.password_hash if agent is not None else self._decoy
        matches = await asyncio.to_thread(_verify, stored, password)
        return agent if matches and agent is not None else None


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
