"""deploy/compose.yaml: PostgreSQL, a migration, two replicas behind Caddy (structure only)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from backchannel.cli.server import hypercorn_config
from backchannel.endpoints.health import READINESS_PATH
from backchannel.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REPLICAS = ("backchannel-1", "backchannel-2")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match[1])


def test_compose_runs_postgres_a_migration_two_replicas_and_a_proxy() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", *REPLICAS, "proxy"}
    assert services["migrate"]["command"] == ["backchannel", "migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["migrate"]["build"]["dockerfile"] == "deploy/Dockerfile"
    for name in REPLICAS:
        replica = services[name]
        assert replica["image"] == services["migrate"]["image"]
        assert replica["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert replica["read_only"] is True and replica["cap_drop"] == ["ALL"]
        assert READINESS_PATH in " ".join(replica["healthcheck"]["test"])
        assert "ports" not in replica  # reached through the proxy only
    assert services["proxy"]["ports"] == ["127.0.0.1:8000:8000"]


def test_the_replicas_settings_are_valid_and_their_grace_period_covers_shutdown() -> None:
    replica = compose()["services"]["backchannel-1"]
    settings = Settings.from_env(replica["environment"])
    assert settings.issuer == "http://localhost:8000"  # the proxy's address
    graceful = hypercorn_config(DEPLOY / "hypercorn.toml").graceful_timeout
    assert seconds(replica["stop_grace_period"]) > settings.shutdown_delay + graceful


def test_the_proxy_balances_over_both_replicas_and_checks_readiness() -> None:
    proxy = compose()["services"]["proxy"]
    [mount] = proxy["volumes"]
    source, target, _mode = mount.split(":")
    assert target == "/etc/caddy/Caddyfile"
    caddyfile = (DEPLOY / source).read_text()
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile)
    assert upstreams is not None
    assert upstreams[1].split() == [f"{name}:8000" for name in REPLICAS]
    assert re.search(rf"health_uri {READINESS_PATH}\n", caddyfile)
    interval = re.search(r"health_interval (\d+)s", caddyfile)
    assert interval is not None
    # Replicas keep serving after turning unready until the proxy has seen it.
    replica = compose()["services"]["backchannel-1"]
    assert int(replica["environment"]["BACKCHANNEL_SHUTDOWN_DELAY"]) >= int(interval[1])
