"""The panel's routes and handlers; ``create_app(config)`` is the Starlette app.

Everything but the login page and the static files needs a signed-in agent:
pages redirect to ``/login``, the event stream answers 401. Every form post
must carry the session's CSRF token (``csrf``). The lifespan owns the
relying-party client (``backchannel.rp.CibaClient``) and stops the waits and
event streams on the way out.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from backchannel.rp import CibaClient
from examples.call_centre.attempts import AttemptBook
from examples.call_centre.binding import REASONS
from examples.call_centre.caller import parse_caller
from examples.call_centre.config import PanelConfig
from examples.call_centre.csrf import post_is_genuine
from examples.call_centre.forms import BadForm, read_form
from examples.call_centre.live import HEADERS as EVENT_HEADERS
from examples.call_centre.live import attempt_events
from examples.call_centre.login_throttle import LoginThrottle
from examples.call_centre.pages import desk_page, login_page, message_page
from examples.call_centre.security_headers import SecurityHeaders
from examples.call_centre.sessions import Session, SessionStore
from examples.call_centre.verification import Verifier

STATIC = Path(__file__).resolve().parent / "static"
LOGIN_FAILED = "Wrong login name or password."


def login_locked(seconds: int) -> str:
    minutes = max(1, -(-seconds // 60))
    return (
        "Too many wrong passwords for this login name. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}, or ask your team lead."
    )


@dataclass
class Panel:
    """What the handlers share: settings, sessions, attempts and the verifier."""

    config: PanelConfig
    sessions: SessionStore
    book: AttemptBook
    verifier: Verifier | None = None  # set while the lifespan runs
    throttle: LoginThrottle = field(default_factory=LoginThrottle)


def _panel(request: Request) -> Panel:
    panel: Panel = request.app.state.panel
    return panel


def _agent_session(request: Request) -> Session | None:
    session = _panel(request).sessions.of(request)
    return session if session is not None and session.agent is not None else None


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _forbidden() -> HTMLResponse:
    page = message_page(
        "Refused",
        "This form is out of date or did not come from the panel. Reload the page and try again.",
    )
    return HTMLResponse(page, status_code=403)


async def _genuine_form(request: Request, session: Session | None) -> dict[str, str] | None:
    """The posted form if it carries the session's CSRF token, else None."""
    try:
        form = await read_form(request)
    except BadForm:
        return None
    if not post_is_genuine(request, form, session, _panel(request).config.origin):
        return None
    return form


async def show_login(request: Request) -> Response:
    panel = _panel(request)
    session = panel.sessions.of(request)
    if session is not None and session.agent is not None:
        return _see_other("/")
    fresh = session is None
    if session is None:
        session = panel.sessions.start()
    response = HTMLResponse(login_page(session))
    if fresh:
        panel.sessions.set_cookie(response, session)
    return response


async def log_in(request: Request) -> Response:
    panel = _panel(request)
    session = panel.sessions.of(request)
    form = await _genuine_form(request, session)
    if form is None or session is None:
        return _forbidden()
    login, password = form.get("login", ""), form.get("password", "")
    wait = panel.throttle.locked_for(login)
    if wait:
        page = login_page(session, login=login, error=login_locked(wait))
        return HTMLResponse(page, status_code=429, headers={"Retry-After": str(wait)})
    agent = await panel.config.agents.authenticate(login, password) if login and password else None
    if agent is None:
        if login:
            panel.throttle.failed(login)
        return HTMLResponse(login_page(session, login=login, error=LOGIN_FAILED), status_code=401)
    panel.throttle.succeeded(login)
    signed_in = panel.sessions.sign_in(session, agent)
    response = _see_other("/")
    panel.sessions.set_cookie(response, signed_in)
    return response


async def log_out(request: Request) -> Response:
    panel = _panel(request)
    session = panel.sessions.of(request)
    if await _genuine_form(request, session) is None or session is None:
        return _forbidden()
    panel.sessions.end(session)
    response = _see_other("/login")
    panel.sessions.clear_cookie(response)
    return response


async def desk(request: Request) -> Response:
    session = _agent_session(request)
    if session is None:
        return _see_other("/login")
    assert session.agent is not None
    attempts = _panel(request).book.of_agent(session.agent.login)
    return HTMLResponse(desk_page(session, attempts, None))


async def show_attempt(request: Request) -> Response:
    session = _agent_session(request)
    if session is None:
        return _see_other("/login")
    assert session.agent is not None
    book = _panel(request).book
    attempt = book.get(request.path_params["attempt_id"], session.agent.login)
    if attempt is None:
        page = message_page("Not found", "There is no such attempt of yours.")
        return HTMLResponse(page, status_code=404)
    return HTMLResponse(desk_page(session, book.of_agent(session.agent.login), attempt))


async def _agent_post(request: Request) -> tuple[Panel, Session, dict[str, str]] | Response:
    """A logged-in agent's form post with its session's CSRF token, or the answer refusing it."""
    panel = _panel(request)
    session = _agent_session(request)
    form = await _genuine_form(request, session)
    if session is None:
        return _see_other("/login")
    if form is None:
        return _forbidden()
    return panel, session, form


async def start_attempt(request: Request) -> Response:
    posted = await _agent_post(request)
    if isinstance(posted, Response):
        return posted
    panel, session, form = posted
    assert session.agent is not None and panel.verifier is not None
    caller_text, reason = form.get("caller", ""), form.get("reason", "")
    attempts = panel.book.of_agent(session.agent.login)
    if reason not in REASONS:
        page = desk_page(session, attempts, None, caller_text=caller_text, error="Pick a reason.")
        return HTMLResponse(page, status_code=422)
    try:
        caller = parse_caller(caller_text)
    except ValueError as problem:
        page = desk_page(
            session, attempts, None, caller_text=caller_text, reason=reason, error=str(problem)
        )
        return HTMLResponse(page, status_code=422)
    attempt = await panel.verifier.start(session.agent, caller, reason)
    return _see_other(f"/attempts/{attempt.id}")


async def mark_done(request: Request) -> Response:
    posted = await _agent_post(request)
    if isinstance(posted, Response):
        return posted
    panel, session, _form = posted
    assert session.agent is not None and panel.verifier is not None
    attempt = panel.book.get(request.path_params["attempt_id"], session.agent.login)
    if attempt is None:
        page = message_page("Not found", "There is no such attempt of yours.")
        return HTMLResponse(page, status_code=404)
    panel.verifier.mark_done(attempt)  # once, and only for a verified caller
    return _see_other(f"/attempts/{attempt.id}")


async def events(request: Request) -> Response:
    panel = _panel(request)
    session = _agent_session(request)
    if session is None:
        return Response("log in first\n", status_code=401, media_type="text/plain")
    assert session.agent is not None
    stream = attempt_events(
        panel.book, session.agent.login, lambda: panel.sessions.is_live(session)
    )
    return StreamingResponse(stream, media_type="text/event-stream", headers=EVENT_HEADERS)


def create_app(config: PanelConfig) -> Starlette:
    panel = Panel(
        config=config,
        sessions=SessionStore(
            idle=config.session_idle,
            lifetime=config.session_lifetime,
            secure=config.secure_cookies,
        ),
        book=AttemptBook(),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with CibaClient(config.issuer, config.auth) as client:
            panel.verifier = Verifier(client, panel.book, request_expiry=config.request_expiry)
            try:
                yield
            finally:
                panel.book.close()
                await panel.verifier.close()
                panel.verifier = None

    app = Starlette(
        routes=[
            Route("/", desk, methods=["GET"]),
            Route("/login", show_login, methods=["GET"]),
            Route("/login", log_in, methods=["POST"]),
            Route("/logout", log_out, methods=["POST"]),
            Route("/attempts", start_attempt, methods=["POST"]),
            Route("/attempts/{attempt_id}", show_attempt, methods=["GET"]),
            Route("/attempts/{attempt_id}/done", mark_done, methods=["POST"]),
            Route("/events", events, methods=["GET"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[Middleware(SecurityHeaders)],
        lifespan=lifespan,
    )
    app.state.panel = panel
    return app
