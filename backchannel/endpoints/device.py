"""The device API the authenticator app calls (docs/device-api.md): thin handlers.

Every ``POST`` carries one compact JWS as ``application/jose``; the protocol
layer verifies it (``authenticator.device_auth``) and acts. Answers are JSON and never
cached.
"""

from __future__ import annotations

import base64
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from backchannel.authenticator.account import account_fields, device_account
from backchannel.authenticator.decisions import (
    HISTORY_LIMIT,
    decide_on_device,
    decision_label,
    pending_requests,
)
from backchannel.authenticator.device_auth import (
    DeviceCall,
    verify_device_call,
    verify_enrolment_proof,
)
from backchannel.authenticator.device_management import (
    parse_subscription,
    refresh_subscription,
    remove_device,
)
from backchannel.authenticator.enrolment import enrol_device
from backchannel.authenticator.messages import prompt_fields, request_ref, timestamp
from backchannel.authenticator.webauthn_party import webauthn_party
from backchannel.authenticator.webauthn_registration import (
    register_credential,
    registration_options,
    webauthn_state,
)
from backchannel.db.devices import (
    PendingRequest,
    select_active_devices,
    select_active_vapid_key,
    select_device,
    select_device_history,
)
from backchannel.db.webauthn import select_credential_counts
from backchannel.endpoints.request_body import read_body
from backchannel.endpoints.request_context import services_of
from backchannel.errors import NO_STORE, AccessDenied, InvalidRequest
from backchannel.oauth.services import Services
from backchannel.responses import JSONResponse

JOSE_TYPE = "application/jose"
# A device JWS is small; the largest (an enrolment) stays well under this.
MAX_DEVICE_BODY = 16384

CONFIG_PATH = "/device/config"
ENROL_PATH = "/device/enrol"
REQUESTS_PATH = "/device/requests"
DECISION_PATH = "/device/decision"
SUBSCRIPTION_PATH = "/device/subscription"
HISTORY_PATH = "/device/history"
DEVICES_PATH = "/device/devices"
REMOVE_PATH = "/device/remove"
WEBAUTHN_OPTIONS_PATH = "/device/webauthn/register-options"
WEBAUTHN_REGISTER_PATH = "/device/webauthn/register"
# A registration answer carries an attestation statement (certificates, with direct
# attestation): allow it more room than other device calls.
MAX_REGISTRATION_BODY = 65536


async def read_jose(request: Request, max_bytes: int = MAX_DEVICE_BODY) -> str:
    """The compact JWS a device posted; ``invalid_request`` for anything else."""
    body = await read_body(request, JOSE_TYPE, max_bytes)
    try:
        token = body.decode("ascii").strip()
    except UnicodeDecodeError:
        raise InvalidRequest("the body must be a compact JWS") from None
    if not token:
        raise InvalidRequest("the body must be a compact JWS")
    return token


def _json(body: dict[str, Any], status_code: int = 200) -> Response:
    return JSONResponse(body, status_code=status_code, headers=NO_STORE)


async def _device_call(
    request: Request, path: str, max_bytes: int = MAX_DEVICE_BODY, *, names_request: bool = False
) -> tuple[Services, DeviceCall]:
    services = services_of(request)
    token = await read_jose(request, max_bytes)
    return services, await verify_device_call(services, token, path, names_request=names_request)


async def device_config(request: Request) -> Response:
    services = services_of(request)
    vapid = await select_active_vapid_key(services.pool)
    party = webauthn_party(services.settings)
    return _json(
        {
            "issuer": services.settings.issuer,
            "vapid_public_key": vapid[1] if vapid else None,
            "webauthn_rp_id": party.rp_id if party is not None else None,
        }
    )


async def device_enrol(request: Request) -> Response:
    services = services_of(request)
    proof = await verify_enrolment_proof(services, await read_jose(request), ENROL_PATH)
    async with services.pool.acquire() as conn:
        enrolled = await enrol_device(conn, services.settings, proof)
    return _json(
        {
            "device_id": enrolled.device_id,
            "user": account_fields(enrolled.display_name, enrolled.email),
            "push": enrolled.push,
            "vapid_public_key": enrolled.vapid_public_key,
        },
        status_code=201,
    )


def _pending_json(request: PendingRequest) -> dict[str, Any]:
    fields = prompt_fields(
        ref=request_ref(request.id_hash),
        client_name=request.client_name,
        binding_message=request.binding_message,
        scope=request.scope,
        expires_at=request.expires_at,
        challenge=request.challenge,
        number_choices=request.number_choices,
        client_id=request.client_id,
        user_verification_required=request.user_verification == "required",
        authorization_details=request.authorization_details,
    )
    return {
        **fields,
        "created_at": timestamp(request.created_at),
        "expires_in": request.expires_in,
    }


async def device_requests(request: Request) -> Response:
    services, call = await _device_call(request, REQUESTS_PATH)
    async with services.pool.acquire() as conn:
        pending = await pending_requests(conn, call.device.user_id)
        account = await device_account(conn, call.device.user_id)
    return _json(
        {
            "requests": [_pending_json(r) for r in pending],
            "webauthn": await webauthn_state(services, call.device),
            "account": account,
            "push": call.device.push_endpoint is not None,
        }
    )


async def device_decision(request: Request) -> Response:
    services, call = await _device_call(request, DECISION_PATH, names_request=True)
    async with services.pool.acquire() as conn:
        decided = await decide_on_device(conn, call, services.settings, metrics=services.metrics)
    return _json({"ref": decided.ref, "status": decided.status})


async def device_subscription(request: Request) -> Response:
    services, call = await _device_call(request, SUBSCRIPTION_PATH)
    subscription = parse_subscription(call.payload.get("subscription"), services.settings)
    await refresh_subscription(services.pool, call.device, subscription)
    return _json({"device_id": call.device.device_id})


async def device_history(request: Request) -> Response:
    services, call = await _device_call(request, HISTORY_PATH)
    history = await select_device_history(services.pool, call.device.device_id, HISTORY_LIMIT)
    return _json(
        {
            "decisions": [
                {
                    "ref": request_ref(past.id_hash),
                    "client_name": past.client_name,
                    "binding_message": past.binding_message,
                    "decision": decision_label(past),
                    "decided_at": timestamp(past.decided_at),
                }
                for past in history
            ]
        }
    )


async def device_devices(request: Request) -> Response:
    services, call = await _device_call(request, DEVICES_PATH)
    devices = await select_active_devices(services.pool, user_id=call.device.user_id)
    keys = await select_credential_counts(services.pool, [d.device_id for d, _ in devices])
    return _json(
        {
            "devices": [
                {
                    "device_id": device.device_id,
                    "name": device.name,
                    "created_at": timestamp(device.created_at),
                    "last_seen_at": (
                        timestamp(device.last_seen_at) if device.last_seen_at else None
                    ),
                    "this_device": device.device_id == call.device.device_id,
                    "user_verification_keys": keys.get(device.device_id, 0),
                    "push": device.push_endpoint is not None,
                }
                for device, _subject in devices
            ]
        }
    )


async def device_remove(request: Request) -> Response:
    services, call = await _device_call(request, REMOVE_PATH)
    target_id = call.payload.get("device_id")
    if target_id is None:
        target_id = call.device.device_id
    if not isinstance(target_id, str) or not target_id:
        raise InvalidRequest("device_id must be a string")
    async with services.pool.acquire() as conn:
        target = await select_device(conn, target_id)
        if target is None or target.removed:
            raise InvalidRequest("no such active device", status_code=404)
        if target.user_id != call.device.user_id:
            raise AccessDenied("the device belongs to another user")
        removed = await remove_device(
            conn, target_id, detail={"by": "device", "by_device": call.device.device_id}
        )
    if removed is None:
        raise InvalidRequest("no such active device", status_code=404)
    return _json({"device_id": target_id, "removed": True})


async def device_webauthn_options(request: Request) -> Response:
    services, call = await _device_call(request, WEBAUTHN_OPTIONS_PATH)
    return _json({"publicKey": await registration_options(services, call.device)})


async def device_webauthn_register(request: Request) -> Response:
    services, call = await _device_call(request, WEBAUTHN_REGISTER_PATH, MAX_REGISTRATION_BODY)
    async with services.pool.acquire() as conn:
        credential = await register_credential(
            services, conn, call.device, call.payload.get("credential")
        )
    state = await webauthn_state(services, call.device)
    return _json(
        {"credential_id": _b64(credential.credential_id), "webauthn": state}, status_code=201
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
