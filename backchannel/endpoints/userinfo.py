# placeholder: replaced by the real implementation
from starlette.requests import Request
from starlette.responses import Response


async def userinfo(request: Request) -> Response:
    raise NotImplementedError
