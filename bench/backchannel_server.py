"""The backchannel app for hypercorn (bench/run.py runs it with bench/hypercorn.toml).

Settings come from the environment exactly as in production
(``Settings.from_env()``; bench/run.py sets ``BACKCHANNEL_DATABASE_URL``,
``BACKCHANNEL_ISSUER``, ``BACKCHANNEL_LOG_LEVEL=WARNING`` ...).
"""

from __future__ import annotations

import logging

from backchannel.app import create_app
from backchannel.settings import Settings

settings = Settings.from_env()
logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
app = create_app(settings)
