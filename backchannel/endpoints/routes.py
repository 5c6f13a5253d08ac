"""Every HTTP route the service answers."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from backchannel.endpoints import bc_authorize, discovery, introspect, revoke, token, userinfo


def routes() -> list[BaseRoute]:
    return [
        Route("/.well-known/openid-configuration", discovery.openid_configuration, methods=["GET"]),
        Route("/jwks", discovery.jwks, methods=["GET"]),
        Route("/bc-authorize", bc_authorize.bc_authorize, methods=["POST"]),
        Route("/token", token.token, methods=["POST"]),
        Route("/userinfo", userinfo.userinfo, methods=["GET", "POST"]),
        Route("/revoke", revoke.revoke, methods=["POST"]),
        Route("/introspect", introspect.introspect, methods=["POST"]),
    ]
