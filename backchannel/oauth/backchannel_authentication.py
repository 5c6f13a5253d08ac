"""The backchannel authentication request (CIBA §7): validate, resolve the user, store.

Every outcome after the client is known is audited: ``auth_request_issued``
with the stored row, ``auth_request_rejected`` with the error code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from backchannel.db.audit import insert_audit_event
from backchannel.db.auth_requests import (
    NewAuthRequest,
    QueuedPrompt,
    SealedNotification,
    insert_auth_request,
)
from backchannel.db.authorization_types import select_authorization_schemas
from backchannel.db.client_notifications import sealed_field
from backchannel.db.clients import Client
from backchannel.errors import InvalidRequest, OAuthError
from backchannel.oauth.admission import admit_request, prompt_caps, refuse_if_capped
from backchannel.oauth.assurance import request_assurance
from backchannel.oauth.authentication_request import (
    REQUEST_PARAMS,
    AuthenticationRequest,
    check_client_may_use_ciba,
    parse_authentication_request,
)
from backchannel.oauth.authorization_details import parse_authorization_details
from backchannel.oauth.fapi_ciba import check_request_form, check_request_parameters
from backchannel.oauth.hint_resolution import resolve_user
from backchannel.oauth.request_object import verify_request_object
from backchannel.oauth.secrets import hash_secret, new_secret
from backchannel.oauth.services import Services
from backchannel.oauth.user_codes import check_user_code


async def start_authentication(
    services: Services,
    client: Client,
    form: Mapping[str, str],
    caller_ip: str | None = None,
) -> dict[str, Any]:
    """Handle an authenticated client's request; return the §7.3 response body.

    Policy rules and push-fatigue limits (docs/policy.md) may refuse it with
    ``access_denied`` before it is stored; ``caller_ip`` is the client's address.
    """
    try:
        check_client_may_use_ciba(client)
        check_request_form(client, signed="request" in form)
        params = await _request_parameters(services, client, form)
        check_request_parameters(client, params)
        request = parse_authentication_request(params, client, services.settings)
        if "authorization_details" in params:
            # Validated per type; an operator's own types are read only when needed.
            registered = await select_authorization_schemas(services.pool)
            details = parse_authorization_details(
                params["authorization_details"], client, registered
            )
            request = dataclasses.replace(request, authorization_details=details)
        user = await resolve_user(services, client, **{request.hint_kind: request.hint})
        if client.backchannel_user_code_parameter:
            assert request.user_code is not None
            await check_user_code(services, client, user, request.user_code)
    except OAuthError as exc:
        await insert_audit_event(
            services.pool,
            "auth_request_rejected",
            client_id=client.client_id,
            detail={"error": exc.error, "description": exc.description},
        )
        raise
    admitted = await admit_request(services, client, user, request, caller_ip)
    assurance = request_assurance(request.acr_values, admitted.user_verification)
    auth_req_id = new_secret()
    id_hash = hash_secret(auth_req_id)
    interval = services.settings.poll_interval
    expires_at = datetime.now(UTC) + timedelta(seconds=request.expires_in)
    prompt = services.prompts(
        ref=id_hash.hex(),
        client_id=client.client_id,
        client_name=client.name,
        binding_message=request.binding_message,
        scope=request.scope,
        expires_at=expires_at,
        number_matching=client.number_matching,
        user_verification_required=assurance.user_verification == "required",
        authorization_details=request.authorization_details,
    )
    issued = await insert_auth_request(
        services.pool,
        NewAuthRequest(
            id_hash=id_hash,
            client_id=client.client_id,
            user_id=user.user_id,
            scope=request.scope,
            acr_values=request.acr_values,
            binding_message=request.binding_message,
            delivery_mode=client.backchannel_token_delivery_mode,
            requested_expiry=request.requested_expiry,
            expires_at=expires_at,
            poll_interval=interval,
            device_challenge=prompt.challenge,
            number_match=prompt.number_match,
            number_choices=prompt.number_choices,
            user_verification=assurance.user_verification,
            acr=assurance.acr,
            authorization_details=request.authorization_details,
        ),
        QueuedPrompt(prompt.topic, prompt.payload, prompt.withdrawal),
        {
            "scope": list(request.scope),
            "hint": request.hint_kind,
            "binding_message": request.binding_message,
            "expires_in": request.expires_in,
            "signed": "request" in form,
            "acr": assurance.acr,
            "user_verification": assurance.user_verification,
            **(
                {"authorization_details": list(request.authorization_details)}
                if request.authorization_details is not None
                else {}
            ),
            **admitted.audit_detail,
        },
        prompt_caps(services.settings),
        _sealed_notification(services, client, request, auth_req_id, id_hash),
    )
    await refuse_if_capped(services, client, user, issued)
    body: dict[str, Any] = {
        "auth_req_id": auth_req_id,
        "expires_in": request.expires_in,
        "interval": interval,
    }
    if prompt.number_match is not None:
        body["number_match"] = prompt.number_match  # shown by the client, picked on the phone
    return body


async def _request_parameters(
    services: Services, client: Client, form: Mapping[str, str]
) -> Mapping[str, Any]:
    """The request's parameters: from the signed request object when there is one (§7.1.1)."""
    request_jwt = form.get("request")
    if request_jwt is None:
        if client.require_signed_request:
            raise InvalidRequest("this client must send a signed authentication request")
        return form
    outside = sorted(name for name in form if name in REQUEST_PARAMS)
    if outside:
        raise InvalidRequest(
            "with a signed request, parameters must be inside it: " + ", ".join(outside)
        )
    claims = await verify_request_object(services, client, request_jwt)
    return {name: value for name, value in claims.items() if name in REQUEST_PARAMS}


def _sealed_notification(
    services: Services,
    client: Client,
    request: AuthenticationRequest,
    auth_req_id: str,
    id_hash: bytes,
) -> SealedNotification | None:
    """What a ping or push client's notification will send back (CIBA §10.2, §10.3),
    sealed under the key-encryption key when one is set."""
    mode = client.backchannel_token_delivery_mode
    if mode == "poll":
        return None
    assert request.client_notification_token is not None
    wrap = services.wrapper.wrap_json
    return SealedNotification(
        mode=mode,
        auth_req_id_sealed=wrap(auth_req_id, sealed_field(id_hash, "auth_req_id")),
        bearer_sealed=wrap(request.client_notification_token, sealed_field(id_hash, "bearer")),
    )
