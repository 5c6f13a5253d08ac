"""No route and wrong method: JSON in the OAuth error shape, like every other error."""

from __future__ import annotations

import httpx

from tests.conftest import RunningApp


async def test_an_unknown_path_answers_404_json(http: httpx.AsyncClient) -> None:
    response = await http.get("/no-such-endpoint")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert response.json() == {
        "error": "not_found",
        "error_description": "no endpoint at /no-such-endpoint",
    }


async def test_a_wrong_method_answers_405_json_and_keeps_allow(http: httpx.AsyncClient) -> None:
    response = await http.get("/token")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "error": "method_not_allowed",
        "error_description": "GET is not allowed here; use POST",
    }


async def test_the_authenticator_app_keeps_its_own_404_with_its_security_headers(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/authenticator/no-such-file.js")
    assert response.status_code == 404
    assert "content-security-policy" in response.headers


async def test_the_405_description_names_the_allowed_methods_in_a_stable_order(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/jwks")
    assert response.status_code == 405
    assert response.json()["error_description"] == "POST is not allowed here; use GET, HEAD"


async def test_behind_a_path_prefix_token_is_still_served_and_other_paths_still_404(
    running: RunningApp,
) -> None:
    """A proxy that mounts the service under /idp passes root_path (ASGI): /idp/token is
    the token endpoint, and /idpx/token is not."""
    transport = httpx.ASGITransport(app=running.app, root_path="/idp")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        token = await http.post("/idp/token", data={"grant_type": "x"})
        assert token.status_code in (400, 401)
        assert token.json()["error"] in ("invalid_client", "unsupported_grant_type")
        assert (await http.post("/idpx/token", data={"grant_type": "x"})).status_code == 404
