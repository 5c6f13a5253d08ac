"""Running the operator CLI in tests: ``main([...])`` as an operator runs it.

``main`` runs its own event loop, so each call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backchannel.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def json_lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]


Cli = Callable[..., Awaitable[Result]]


def clean_environment(monkeypatch: pytest.MonkeyPatch, data_dir: Path) -> None:
    """No BACKCHANNEL_* setting from the developer's shell leaks into a command."""
    for name in list(os.environ):
        if name.startswith("BACKCHANNEL_") and name != "BACKCHANNEL_TEST_DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.setenv("BACKCHANNEL_DATA_DIR", str(data_dir))


def cli_runner(
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """A function running one command against ``database_url``; its exit code and output."""
    clean_environment(monkeypatch, data_dir)
    monkeypatch.setenv("BACKCHANNEL_DATABASE_URL", database_url)

    async def run(*argv: str) -> Result:
        capsys.readouterr()
        code = await asyncio.to_thread(main, list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run
