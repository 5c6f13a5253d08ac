"""``GET /healthz`` (liveness) and ``GET /readyz`` (readiness) for load balancers and Kubernetes.

``/healthz`` answers as long as the event loop runs: no database call, so a
database outage never gets healthy replicas restarted. ``/readyz`` answers 200
only when this replica can serve: the database answers within
:data:`DATABASE_TIMEOUT` and has every migration this version needs, the
signing keys are loaded, the LISTEN connection is up, and shutdown has not
begun. At shutdown it turns 503 before held long polls are answered
(``cli/server.py``), so a load balancer stops routing here first.

Both are unauthenticated and reveal nothing secret: each check is named with
``ok`` or a short reason. Neither is logged at INFO by the access log.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
from starlette.requests import Request
from starlette.responses import Response

from backchannel.db.migrate import select_missing_migrations, shipped_migrations
from backchannel.endpoints.request_context import services_of
from backchannel.oauth.algorithms import SIGNING_ALGS
from backchannel.oauth.services import Services
from backchannel.responses import JSONResponse

__all__ = ["DATABASE_TIMEOUT", "HEALTH_PATHS", "LIVENESS_PATH", "READINESS_PATH", "healthz"]

LIVENESS_PATH = "/healthz"
READINESS_PATH = "/readyz"
HEALTH_PATHS = frozenset({LIVENESS_PATH, READINESS_PATH})

# Seconds the database (a pooled connection and one statement) may take before
# the replica counts as unready. Keep probe timeouts above it.
DATABASE_TIMEOUT = 2.0

OK = "ok"
NO_STORE = {"Cache-Control": "no-store"}

Check = Callable[[Services], Awaitable[str]]


async def healthz(request: Request) -> Response:
    """Liveness: the process serves HTTP."""
    return JSONResponse({"status": "ok"}, headers=NO_STORE)


async def readyz(request: Request) -> Response:
    """Readiness: 200 when every check is ``ok``, else 503; the body names each check."""
    services = services_of(request)
    checks = {
        "shutdown": "draining" if services.draining else OK,
        "listener": OK if services.listener.connected else "not connected",
        "signing_keys": _signing_keys(services),
        **await _database(services),
    }
    ready = all(result == OK for result in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unready", "checks": checks},
        status_code=200 if ready else 503,
        headers=NO_STORE,
    )


def _signing_keys(services: Services) -> str:
    missing = []
    for alg in SIGNING_ALGS:
        try:
            services.keys.signing_key(alg)
        except ValueError:
            missing.append(alg)
    return f"none loaded for {', '.join(missing)}" if missing else OK


async def _database(services: Services) -> dict[str, str]:
    """The ``database`` and ``migrations`` checks, from one pooled statement."""
    migrations = shipped_migrations()
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT):
            async with services.pool.acquire() as conn:
                missing = await select_missing_migrations(conn, migrations)
    except TimeoutError:
        return {"database": f"no answer within {DATABASE_TIMEOUT:g} s", "migrations": "unknown"}
    except asyncpg.UndefinedTableError:
        return {"database": OK, "migrations": "schema_migrations is missing"}
    except Exception as exc:  # whatever the cause, the answer is "unready", never a 500
        return {"database": f"unreachable ({type(exc).__name__})", "migrations": "unknown"}
    if missing:
        return {"database": OK, "migrations": f"pending: {', '.join(missing)}"}
    return {"database": OK, "migrations": OK}
