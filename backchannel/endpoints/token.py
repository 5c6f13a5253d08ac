# placeholder
from starlette.requests import Request
from starlette.responses import Response


async def token(request: Request) -> Response:
    raise NotImplementedError
