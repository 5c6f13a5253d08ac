"""Every HTTP route the service answers."""

from __future__ import annotations

from starlette.routing import BaseRoute, Mount, Route

from backchannel.endpoints import (
    admin,
    bc_authorize,
    device,
    discovery,
    health,
    introspect,
    metrics,
    openapi,
    receipts,
    revoke,
    token,
    userinfo,
)
from backchannel.endpoints.authenticator_app import authenticator_files

# The hot endpoints: the request gateway calls them without the router.
DIRECT_PATHS = ("/token", "/bc-authorize")


def routes() -> list[BaseRoute]:
    # Matched in order: the two hot endpoints first.
    return [
        Route("/token", token.token, methods=["POST"]),
        Route("/bc-authorize", bc_authorize.bc_authorize, methods=["POST"]),
        Route(health.LIVENESS_PATH, health.healthz, methods=["GET"]),
        Route(health.READINESS_PATH, health.readyz, methods=["GET"]),
        Route("/.well-known/openid-configuration", discovery.openid_configuration, methods=["GET"]),
        Route("/jwks", discovery.jwks, methods=["GET"]),
        Route(openapi.OPENAPI_PATH, openapi.openapi, methods=["GET"]),
        Route("/userinfo", userinfo.userinfo, methods=["GET", "POST"]),
        Route("/revoke", revoke.revoke, methods=["POST"]),
        Route("/introspect", introspect.introspect, methods=["POST"]),
        Route(device.CONFIG_PATH, device.device_config, methods=["GET"]),
        Route(device.ENROL_PATH, device.device_enrol, methods=["POST"]),
        Route(device.REQUESTS_PATH, device.device_requests, methods=["POST"]),
        Route(device.DECISION_PATH, device.device_decision, methods=["POST"]),
        Route(device.SUBSCRIPTION_PATH, device.device_subscription, methods=["POST"]),
        Route(device.HISTORY_PATH, device.device_history, methods=["POST"]),
        Route(device.DEVICES_PATH, device.device_devices, methods=["POST"]),
        Route(device.REMOVE_PATH, device.device_remove, methods=["POST"]),
        Route(device.WEBAUTHN_OPTIONS_PATH, device.device_webauthn_options, methods=["POST"]),
        Route(device.WEBAUTHN_REGISTER_PATH, device.device_webauthn_register, methods=["POST"]),
        Route(admin.ENROLMENTS_PATH, admin.create_enrolment, methods=["POST"]),
        Route(receipts.RECEIPTS_PATH, receipts.receipts, methods=["POST"]),
        Route(metrics.METRICS_PATH, metrics.metrics, methods=["GET"]),
        Mount("/authenticator", app=authenticator_files()),
    ]
