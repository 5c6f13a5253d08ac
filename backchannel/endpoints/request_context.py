"""Helpers every endpoint uses to reach the app's services."""

from __future__ import annotations

from starlette.requests import Request

from backchannel.oauth.services import Services


def services_of(request: Request) -> Services:
    services: Services = request.app.state.services
    return services
