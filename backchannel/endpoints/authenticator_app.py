"""Serving the authenticator PWA at ``/authenticator/``.

Every response, errors included, carries a strict Content-Security-Policy:
the app has no inline script or style and loads nothing from elsewhere, so a
binding message that slipped past escaping still could not run. The page,
the service worker and the JavaScript modules are revalidated on each load
(``no-cache`` with an ETag): a phone must not keep running an old page
against a newer device API, and the browser checks ``sw.js`` for updates.
"""

from __future__ import annotations

import os
from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from backchannel.bundled import bundled_dir

APP_DIR = bundled_dir("authenticator_app")

CONTENT_SECURITY_POLICY = "; ".join(
    (
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
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# Build helpers kept beside the app but not part of it.
_NOT_SERVED = frozenset({"tools"})

MANIFEST_TYPE = "application/manifest+json"
# Icons and the manifest's screenshots change rarely and are not code: a day of caching
# is harmless.
ICON_CACHE = "public, max-age=86400"
_IMAGE_DIRS = ("icons", "screenshots")


class AuthenticatorFiles(StaticFiles):
    """StaticFiles that adds the security and caching headers to every answer."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            if path.split(os.sep)[0] in _NOT_SERVED:
                raise HTTPException(status_code=404)
            response = await super().get_response(path, scope)
        except HTTPException as exc:
            # Answered here rather than by the app's handler so it keeps the CSP.
            response = PlainTextResponse(
                exc.detail, status_code=exc.status_code, headers=exc.headers
            )
        response.headers.update(SECURITY_HEADERS)
        if path.endswith(".webmanifest") and response.status_code == 200:
            response.headers["Content-Type"] = MANIFEST_TYPE
        if path.split(os.sep)[0] in _IMAGE_DIRS and response.status_code in (200, 304):
            response.headers["Cache-Control"] = ICON_CACHE
        else:
            response.headers["Cache-Control"] = "no-cache"
        return response


def authenticator_files(directory: Path = APP_DIR) -> AuthenticatorFiles:
    """The ASGI app to mount at ``/authenticator``."""
    return AuthenticatorFiles(directory=directory, html=True)
