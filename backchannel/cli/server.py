"""Run the app under hypercorn, with a shutdown that answers held long polls first.

On SIGINT or SIGTERM the shutdown trigger first turns ``/readyz`` unready
(``Services.draining``), so load balancers stop routing here; waits
``BACKCHANNEL_SHUTDOWN_DELAY`` seconds for them to notice (0 by default);
then releases every held token poll (``DecisionWaiters.release_all``), so
clients get their answer at once instead of a dropped connection; then
hypercorn stops accepting, lets in-flight requests finish within
``graceful_timeout``, and runs the lifespan shutdown, which closes the pool.

The event loop is uvloop where it is installed (``BACKCHANNEL_EVENT_LOOP``,
``auto`` by default), else asyncio's own: bench/README.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import tomllib
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path

from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from starlette.applications import Starlette

from backchannel.oauth.services import Services
from backchannel.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_GRACEFUL_TIMEOUT = 10.0


EVENT_LOOPS = ("auto", "uvloop", "asyncio")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop_factory(choice: str) -> tuple[str, LoopFactory | None]:
    """The event loop to serve on: its name, and its factory (None: asyncio's default).

    ``auto`` takes uvloop when it can be imported (it is a dependency wherever it
    builds) and falls back to asyncio's loop; ``uvloop`` insists on it.
    """
    if choice not in EVENT_LOOPS:
        raise ValueError(f"unknown event loop {choice!r}; one of {', '.join(EVENT_LOOPS)}")
    if choice == "asyncio":
        return "asyncio", None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise ValueError("BACKCHANNEL_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return "asyncio", None
    factory: LoopFactory = uvloop.new_event_loop
    return "uvloop", factory


def run_on_event_loop(choice: str, main: Coroutine[object, object, None]) -> None:
    """``asyncio.run(main)`` on the chosen event loop."""
    name, factory = event_loop_factory(choice)
    log.debug("event loop: %s", name)
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(main)


@dataclass(frozen=True)
class Listening:
    """A hypercorn Config whose socket is already bound, and the address it is bound to."""

    config: Config
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def hypercorn_config(
    config_file: Path | None = None, *, graceful_timeout: float | None = None
) -> Config:
    """hypercorn settings (TLS, timeouts, logs) from an optional TOML file.

    Raises ``ValueError`` if the file cannot be read or parsed.
    """
    try:
        config = Config.from_toml(config_file) if config_file is not None else Config()
    except (OSError, tomllib.TOMLDecodeError, TypeError, ValueError) as exc:
        raise ValueError(f"hypercorn config {config_file}: {exc}") from None
    if config_file is None:
        config.graceful_timeout = DEFAULT_GRACEFUL_TIMEOUT
    if graceful_timeout is not None:
        config.graceful_timeout = graceful_timeout
    # Route hypercorn's stderr logs through logging, configured once by the CLI.
    if config.errorlog == "-":
        config.errorlog = logging.getLogger("hypercorn.error")
    if config.accesslog == "-":
        config.accesslog = logging.getLogger("hypercorn.access")
    return config


def bind(settings: Settings, config: Config | None = None) -> Listening:
    """Bind ``settings.host:port`` now; return ``config`` set to serve that socket.

    Binding before the app starts makes "address in use" a clear, early error
    and lets port 0 pick a free port. The config's own ``bind`` is replaced.
    """
    config = config or hypercorn_config()
    sock = _listen_socket(settings.host, settings.port)
    host, port = sock.getsockname()[:2]
    # hypercorn takes the socket over by descriptor and closes it at shutdown.
    config.bind = [f"fd://{sock.detach()}"]
    config.insecure_bind = []
    return Listening(config, host, port)


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def _stop_on_signals(stop: asyncio.Event) -> Iterator[None]:
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread, or not Unix
            continue
        installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


async def serve(app: Starlette, config: Config, *, stop: asyncio.Event | None = None) -> None:
    """Serve ``app`` until SIGINT/SIGTERM (or ``stop`` is set), then shut down gracefully."""
    stop = stop or asyncio.Event()

    async def shutdown_trigger() -> None:
        await stop.wait()
        services: Services | None = getattr(app.state, "services", None)
        if services is None:
            return
        services.draining = True
        delay = services.settings.shutdown_delay
        if delay:
            log.info("shutting down: unready now, answering held polls in %g s", delay)
            await asyncio.sleep(delay)
        log.info("shutting down: answering held polls, finishing in-flight requests")
        services.waiters.release_all()

    with _stop_on_signals(stop):
        await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger)  # type: ignore[arg-type]
