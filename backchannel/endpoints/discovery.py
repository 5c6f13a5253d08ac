# placeholder: replaced by the discovery/JWKS implementation
from starlette.requests import Request
from starlette.responses import Response


async def openid_configuration(request: Request) -> Response:
    raise NotImplementedError


async def jwks(request: Request) -> Response:
    raise NotImplementedError
