"""A private PostgreSQL server for development and tests.

Uses the server bundled by the ``pgserver`` package (it runs the server under a
dedicated system user when started as root). The data directory persists
between runs, so the demo's clients and users survive a restart. ``pgserver``
comes with the ``dev`` extra (``pip install 'backchannel[dev]'``), not with
the production install.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'backchannel[dev]'"


class EmbeddedPostgresUnavailable(RuntimeError):
    """The ``pgserver`` package is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "the embedded PostgreSQL needs the pgserver package, which production installs "
            f"leave out; install it with `{INSTALL_HINT}` (or `./scripts/setup` in a checkout), "
            "or set BACKCHANNEL_DATABASE_URL to use your own PostgreSQL"
        )


class EmbeddedPostgres:
    """A running private server; ``dsn`` connects to its ``postgres`` database."""

    def __init__(self, data_dir: Path, *, cleanup: str | None = "stop") -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                import pgserver
            except ImportError:
                raise EmbeddedPostgresUnavailable() from None

            data_dir = data_dir.resolve()
            data_dir.mkdir(parents=True, exist_ok=True)
            get_server: Any = getattr(pgserver, "get_server")  # noqa: B009 - not re-exported in its stubs
            self._server: Any = get_server(data_dir, cleanup_mode=cleanup)
        self.data_dir = data_dir

    def dsn(self, database: str = "postgres") -> str:
        return str(self._server.get_uri(database))

    def stop(self) -> None:
        self._server.cleanup()


def start_embedded_postgres(data_dir: Path, *, cleanup: str | None = "stop") -> EmbeddedPostgres:
    log.info("starting embedded PostgreSQL in %s", data_dir)
    return EmbeddedPostgres(data_dir, cleanup=cleanup)
