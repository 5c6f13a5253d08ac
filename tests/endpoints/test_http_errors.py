"""No route and wrong method: JSON in the OAuth error shape, like every other error."""

from __future__ import annotations

import httpx


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
