"""The README's tour: its commands do what it says against the real service."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import RegisteredClient

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
TOUR = README[README.index("## A two-minute tour") : README.index("### Approving on a phone")]


def run_python(code: str, stdin: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


@pytest.mark.usefixtures("alice")
async def test_the_tour_captures_the_auth_req_id_with_its_python_one_liner(
    http: httpx.AsyncClient, rp: RegisteredClient
) -> None:
    one_liner = re.search(r"\.venv/bin/python -c '([^']+)'", TOUR)
    assert one_liner is not None
    answer = await http.post(
        "/bc-authorize",
        data={"scope": "openid", "login_hint": "alice@example.com"},
        headers=rp.basic_auth(),
    )
    assert answer.status_code == 200
    assert run_python(one_liner[1], answer.text) == answer.json()["auth_req_id"]


def test_the_tour_leads_with_a_long_poll_and_explains_slow_down() -> None:
    token_requests = [m.start() for m in re.finditer(r"curl .*/token", TOUR)]
    assert token_requests
    first = TOUR[token_requests[0] : TOUR.index("\n", token_requests[0])]
    assert "Prefer: wait=25" in first
    assert "slow_down" in TOUR and "interval" in TOUR
