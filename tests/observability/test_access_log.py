"""BACKCHANNEL_ACCESS_LOG: one line per request; health probes only at DEBUG."""

from __future__ import annotations

import logging

import pytest

from backchannel.settings import Settings
from tests.conftest import start_app

ACCESS = "backchannel.access"


def access_lines(caplog: pytest.LogCaptureFixture, level: int = logging.INFO) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS and r.levelno == level]


async def test_each_request_is_logged_once_with_method_path_status_and_request_id(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=ACCESS)
    async for running in start_app(settings.replace(access_log=True)):
        await running.http.get("/.well-known/openid-configuration?x=secret-looking")
        await running.http.post("/token", data={"grant_type": "password"})
    lines = access_lines(caplog)
    assert len(lines) == 2
    assert " GET /.well-known/openid-configuration 200 " in lines[0]
    assert "secret-looking" not in lines[0]  # never the query string
    assert " POST /token 401 " in lines[1]
    [record] = [r for r in caplog.records if r.name == ACCESS and r.getMessage() == lines[1]]
    assert record.__dict__["status"] == 401
    assert record.__dict__["method"] == "POST"


async def test_health_probes_are_logged_at_debug_not_info(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ACCESS)
    async for running in start_app(settings.replace(access_log=True)):
        await running.http.get("/healthz")
        await running.http.get("/readyz")
    assert access_lines(caplog) == []
    debug = access_lines(caplog, logging.DEBUG)
    assert [line.split()[2] for line in debug] == ["/healthz", "/readyz"]


async def test_without_the_setting_requests_are_not_logged(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=ACCESS)
    async for running in start_app(settings):
        assert (await running.http.get("/jwks")).status_code == 200
    assert [r for r in caplog.records if r.name == ACCESS] == []
