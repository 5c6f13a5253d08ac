"""The authenticator PWA is served at /authenticator/ with a strict CSP on every answer."""

from __future__ import annotations

import json

import httpx
import pytest

from backchannel.endpoints.authenticator_app import APP_DIR, CONTENT_SECURITY_POLICY

STRICT_DIRECTIVES = [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "worker-src 'self'",
    "manifest-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "frame-ancestors 'none'",
    "form-action 'none'",
]


def assert_hardened(response: httpx.Response) -> None:
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_policy_has_every_directive_and_nothing_unsafe() -> None:
    assert CONTENT_SECURITY_POLICY.split("; ") == STRICT_DIRECTIVES
    assert "unsafe" not in CONTENT_SECURITY_POLICY


async def test_index_is_served_at_the_app_root_and_revalidated(http: httpx.AsyncClient) -> None:
    response = await http.get("/authenticator/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["cache-control"] == "no-cache"
    assert '<script type="module" src="app.js">' in response.text
    assert_hardened(response)


async def test_app_path_without_slash_redirects_to_the_directory(http: httpx.AsyncClient) -> None:
    response = await http.get("/authenticator")
    assert response.status_code in (301, 302, 307, 308)
    # The router's own slash redirect: an empty body, so no policy to carry.
    assert response.headers["location"].endswith("/authenticator/")


async def test_service_worker_is_javascript_and_never_cached_stale(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/authenticator/sw.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        ("text/javascript", "application/javascript")
    )
    assert response.headers["cache-control"] == "no-cache"
    assert_hardened(response)


async def test_manifest_has_its_media_type_and_what_installation_needs(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get("/authenticator/manifest.webmanifest")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] == "application/manifest+json"
    assert_hardened(response)
    manifest = response.json()
    assert manifest["start_url"] == manifest["scope"] == manifest["id"] == "/authenticator/"
    assert manifest["display"] == "standalone"
    assert manifest["name"] and manifest["short_name"]
    assert manifest["theme_color"] and manifest["background_color"]
    sizes = {icon["sizes"] for icon in manifest["icons"]}
    assert {"192x192", "512x512"} <= sizes


@pytest.mark.parametrize("size", [192, 512])
async def test_icons_are_pngs_of_their_declared_size(http: httpx.AsyncClient, size: int) -> None:
    response = await http.get(f"/authenticator/icons/icon-{size}.png")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert_hardened(response)
    body = response.content
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")
    assert (width, height) == (size, size)


def _png_size(body: bytes) -> tuple[int, int]:
    assert body[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(body[16:20], "big"), int.from_bytes(body[20:24], "big")


async def test_the_manifest_shows_the_app_narrow_and_wide_and_every_image_it_names_is_served(
    http: httpx.AsyncClient,
) -> None:
    manifest = (await http.get("/authenticator/manifest.webmanifest")).json()
    screenshots = manifest["screenshots"]
    assert {shot["form_factor"] for shot in screenshots} == {"narrow", "wide"}
    for image in [*manifest["icons"], *screenshots]:
        response = await http.get("/authenticator/" + image["src"])
        assert response.status_code == 200, image["src"]
        assert response.headers["content-type"] == image["type"] == "image/png"
        assert response.headers["cache-control"] == "public, max-age=86400"
        assert_hardened(response)
        width, height = _png_size(response.content)
        assert image["sizes"] == f"{width}x{height}", image["src"]
    for shot in screenshots:
        width, height = map(int, shot["sizes"].split("x"))
        # What installation dialogs accept: each side 320 to 3840, the longer at most 2.3x.
        assert min(width, height) >= 320 and max(width, height) <= 3840
        assert max(width, height) <= 2.3 * min(width, height)
        assert (width < height) == (shot["form_factor"] == "narrow")
        assert shot["label"]
    [badge] = [icon for icon in manifest["icons"] if icon["purpose"] == "monochrome"]
    assert badge["src"] == "icons/badge-96.png"


async def test_errors_carry_the_policy_too(http: httpx.AsyncClient) -> None:
    missing = await http.get("/authenticator/nope.js")
    assert missing.status_code == 404
    assert_hardened(missing)
    posted = await http.post("/authenticator/")
    assert posted.status_code == 405
    assert_hardened(posted)


async def test_build_tools_and_paths_outside_the_app_are_not_served(
    http: httpx.AsyncClient,
) -> None:
    assert (APP_DIR / "tools" / "make_icons.py").exists()
    assert (await http.get("/authenticator/tools/make_icons.py")).status_code == 404
    assert (await http.get("/authenticator/../pyproject.toml")).status_code == 404
    assert (await http.get("/authenticator/%2e%2e/pyproject.toml")).status_code == 404


def test_pages_load_nothing_inline_or_from_elsewhere() -> None:
    """The CSP would block inline code: the files must not depend on it."""
    index = (APP_DIR / "index.html").read_text()
    assert "<script>" not in index and "<style" not in index and " style=" not in index
    assert "http://" not in index and "https://" not in index
    for script in APP_DIR.glob("*.js"):
        text = script.read_text()
        assert "innerHTML" not in text, script.name
        assert "insertAdjacentHTML" not in text, script.name
        assert "https://" not in text and "http://" not in text, script.name
    json.loads((APP_DIR / "manifest.webmanifest").read_text())
