"""Who gets into the panel: the login, the session cookie, CSRF, and the response headers."""

from __future__ import annotations

import httpx

from examples.call_centre.login_throttle import LOCK_SECONDS, MAX_FAILURES, LoginThrottle
from examples.call_centre.sessions import COOKIE
from tests.support.call_centre import (
    AGENT_PASSWORD,
    OTHER_AGENT,
    OTHER_PASSWORD,
    Desk,
    csrf_token,
)


def _set_cookie(response: httpx.Response) -> str:
    [cookie] = [v for v in response.headers.get_list("set-cookie") if v.startswith(COOKIE + "=")]
    return cookie


async def test_a_visitor_gets_only_the_login_page(visitor: httpx.AsyncClient) -> None:
    for path in ("/", "/attempts/anything"):
        answer = await visitor.get(path)
        assert (answer.status_code, answer.headers["location"]) == (303, "/login"), path
    started = await visitor.post("/attempts", data={"caller": "alice@example.com"})
    assert (started.status_code, started.headers["location"]) == (303, "/login")
    done = await visitor.post("/attempts/anything/done", data={})
    assert (done.status_code, done.headers["location"]) == (303, "/login")
    events = await visitor.get("/events")
    assert events.status_code == 401

    login = await visitor.get("/login")
    assert login.status_code == 200
    assert '<label for="login">Login name</label>' in login.text
    cookie = _set_cookie(login).lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert "secure" not in cookie  # the panel is served over http here (CALL_CENTRE_PUBLIC_URL)


async def test_a_wrong_password_or_an_unknown_agent_is_refused_alike(
    visitor: httpx.AsyncClient,
) -> None:
    desk = Desk(visitor)
    for login, password in (
        ("agent42", "not the password"),
        ("nobody", AGENT_PASSWORD),
        ("agent42", ""),
    ):
        refused = await desk.log_in(login, password)
        assert refused.status_code == 401
        assert "Wrong login name or password." in refused.text
        assert 'role="alert"' in refused.text
        assert (await visitor.get("/")).status_code == 303  # still not logged in


async def test_logging_in_starts_a_new_session_and_logging_out_ends_it(
    visitor: httpx.AsyncClient,
) -> None:
    await visitor.get("/login")
    anonymous = visitor.cookies[COOKIE]
    desk = Desk(visitor)
    answer = await desk.log_in()
    assert (answer.status_code, answer.headers["location"]) == (303, "/")
    signed_in = visitor.cookies[COOKIE]
    assert signed_in != anonymous  # a session id planted before the login is worthless after
    page = await visitor.get("/")
    assert page.status_code == 200 and "Agent 42" in page.text

    planted = httpx.AsyncClient(base_url=str(visitor.base_url), cookies={COOKIE: anonymous})
    async with planted:
        assert (await planted.get("/")).status_code == 303

    assert (await desk.post("/logout")).headers["location"] == "/login"
    assert (await visitor.get("/")).status_code == 303
    assert (await visitor.get("/events")).status_code == 401


async def test_form_posts_need_the_sessions_csrf_token_and_the_panels_origin(
    desk: Desk, panel: str
) -> None:
    http = desk.http
    without = await http.post("/attempts", data={"caller": "alice@example.com"})
    assert without.status_code == 403
    wrong = await http.post(
        "/attempts", data={"caller": "alice@example.com", "csrf_token": "x" * 43}
    )
    assert wrong.status_code == 403
    elsewhere = await http.post(
        "/attempts",
        data={"caller": "alice@example.com", "csrf_token": desk.token},
        headers={"Origin": "https://attacker.example"},
    )
    assert elsewhere.status_code == 403
    assert (await http.post("/logout", data={})).status_code == 403
    assert (await http.get("/")).status_code == 200  # none of them logged the agent out
    same_origin = await http.post(
        "/attempts",
        data={"caller": "+447700900123", "reason": "password-reset", "csrf_token": desk.token},
        headers={"Origin": panel},
    )
    assert same_origin.status_code == 303


async def test_the_login_form_itself_needs_its_token(visitor: httpx.AsyncClient) -> None:
    await visitor.get("/login")
    answer = await visitor.post("/login", data={"login": "agent42", "password": AGENT_PASSWORD})
    assert answer.status_code == 403
    cookieless = httpx.AsyncClient(base_url=str(visitor.base_url))
    async with cookieless:
        token = csrf_token((await visitor.get("/login")).text)
        stolen = await cookieless.post(
            "/login", data={"login": "agent42", "password": AGENT_PASSWORD, "csrf_token": token}
        )
        assert stolen.status_code == 403


async def test_agents_see_only_their_own_attempts(desk: Desk, panel: str) -> None:
    attempt = await desk.start("alice@example.com")
    async with httpx.AsyncClient(base_url=panel) as other_browser:
        other = Desk(other_browser)
        assert (await other.log_in(OTHER_AGENT, OTHER_PASSWORD)).status_code == 303
        assert (await other_browser.get(attempt)).status_code == 404
        desk_page = await other_browser.get("/")
        assert attempt not in desk_page.text
        assert (await other.post(attempt + "/done")).status_code == 404


async def test_every_answer_carries_a_strict_content_security_policy(
    visitor: httpx.AsyncClient,
) -> None:
    for path in ("/login", "/", "/static/panel.css", "/static/panel.js", "/nowhere"):
        answer = await visitor.get(path)
        csp = answer.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp, path
        assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["referrer-policy"] == "same-origin"
    page = (await visitor.get("/login")).text
    assert "<script>" not in page and "style=" not in page and "http" not in page.split("<body>")[1]
    assert (await visitor.get("/login")).headers["cache-control"] == "no-store"


async def test_repeated_wrong_passwords_lock_the_login_name_even_for_the_right_one(
    visitor: httpx.AsyncClient,
) -> None:
    desk = Desk(visitor)
    for _ in range(MAX_FAILURES):
        assert (await desk.log_in("agent42", "guess")).status_code == 401
    locked = await desk.log_in("agent42", AGENT_PASSWORD)
    assert locked.status_code == 429
    assert 0 < int(locked.headers["retry-after"]) <= LOCK_SECONDS
    assert "Too many wrong passwords" in locked.text
    assert (await visitor.get("/")).status_code == 303  # still not logged in
    # Another agent's name is not locked by them.
    assert (await desk.log_in("nobody", "guess")).status_code == 401


def test_a_lock_ends_after_its_time_and_a_success_clears_the_count() -> None:
    now = [1000.0]
    throttle = LoginThrottle(max_failures=3, window=60, lock=300, clock=lambda: now[0])
    throttle.failed("Agent42")
    throttle.failed("agent42 ")
    throttle.succeeded("agent42")
    throttle.failed("agent42")
    throttle.failed("agent42")
    assert throttle.locked_for("agent42") == 0  # the success reset the count
    now[0] += 61  # the window passed: old failures no longer count
    throttle.failed("agent42")
    assert throttle.locked_for("agent42") == 0
    throttle.failed("agent42")
    throttle.failed("agent42")
    assert throttle.locked_for("AGENT42") == 300
    now[0] += 299.5
    assert throttle.locked_for("agent42") == 1
    now[0] += 0.5
    assert throttle.locked_for("agent42") == 0
