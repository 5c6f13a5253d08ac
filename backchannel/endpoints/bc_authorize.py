# placeholder
from starlette.requests import Request
from starlette.responses import Response


async def bc_authorize(request: Request) -> Response:
    raise NotImplementedError
