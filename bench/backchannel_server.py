"""The backchannel app for hypercorn (bench/run.py runs it with bench/hypercorn.toml).

Settings come from the environment exactly as in production
(``Settings.from_env()``; bench/run.py sets ``BACKCHANNEL_DATABASE_URL``,
``BACKCHANNEL_ISSUER``, ``BACKCHANNEL_LOG_LEVEL=WARNING`` ...).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import asyncpg

from backchannel.app import create_app
from backchannel.settings import Settings

if os.environ.get("BENCH_POOL_RESET") == "off":
    # What-if experiment only (bench/run.py --what-if): pools send no reset query when a
    # connection goes back to the pool. backchannel itself is unchanged.
    _create_pool = asyncpg.create_pool

    async def _keep_session(conn: asyncpg.Connection) -> None:
        return None

    def _create_pool_without_reset(*args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("reset", _keep_session)
        return _create_pool(*args, **kwargs)

    asyncpg.create_pool = _create_pool_without_reset

settings = Settings.from_env()
logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
app = create_app(settings)
