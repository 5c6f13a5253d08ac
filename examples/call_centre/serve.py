"""Running the panel under hypercorn until asked to stop."""

from __future__ import annotations

import asyncio

from hypercorn.asyncio import serve
from hypercorn.config import Config

from examples.call_centre.app import Panel, create_app
from examples.call_centre.config import PanelConfig


async def serve_panel(config: PanelConfig, stop: asyncio.Event) -> None:
    """Serve on ``config.host:config.port`` until ``stop`` is set; OSError if it cannot listen."""
    app = create_app(config)
    hypercorn = Config()
    hypercorn.bind = [f"{config.host}:{config.port}"]
    hypercorn.accesslog = None
    hypercorn.graceful_timeout = 3.0
    panel: Panel = app.state.panel

    async def shutdown() -> None:
        await stop.wait()
        panel.book.close()  # event streams end now rather than at the graceful timeout

    await serve(app, hypercorn, shutdown_trigger=shutdown)  # type: ignore[arg-type]
