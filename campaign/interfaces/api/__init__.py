"""The JSON API for other systems, on the operators' listener (ADMIN_LISTEN) under /api:
routes (the endpoints), schemas (bodies), problems (RFC 9457 errors), openapi (the document).
Keys are made with `campaign api-keys`; the use cases are campaign.people's."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from campaign.engine import App
from campaign.interfaces.api import problems
from campaign.interfaces.api.openapi import document
from campaign.interfaces.api.routes import ApiEndpoints

#: where create_admin_app mounts it.
MOUNT = "/api"


def create_api_app(app: App) -> Starlette:
    """The ASGI application of the API, to mount at MOUNT."""

    async def openapi(request: Request) -> Response:
        # root_path: the mount's path, after any prefix a reverse proxy gave the app.
        return JSONResponse(document(str(request.scope.get("root_path", MOUNT))))

    routes = [*ApiEndpoints(app).routes(), Route("/openapi.json", openapi, methods=["GET"])]
    # Unknown paths and methods are problems too (the routes answer their own errors).
    return Starlette(routes=routes, exception_handlers={HTTPException: problems.handle})


__all__ = ["MOUNT", "create_api_app"]
