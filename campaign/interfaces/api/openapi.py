"""The JSON API's OpenAPI 3.1 document (/api/openapi.json): the paths written here, the bodies'
schemas generated from the pydantic models in `schemas`. A test checks it is valid and that it
lists exactly the routes the API serves."""

from __future__ import annotations

import functools
from typing import Any

from campaign.interfaces.api.problems import MEDIA_TYPE
from campaign.interfaces.api.routes import DEFAULT_PAGE, MAX_PAGE
from campaign.interfaces.api.schemas import component_schemas


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": _ref(name)}}


def _problem(description: str) -> dict[str, Any]:
    return {"description": description, "content": {MEDIA_TYPE: {"schema": _ref("ProblemOut")}}}


_EMAIL = {
    "name": "email",
    "in": "path",
    "required": True,
    "description": "The subscriber's address (URL-encoded), matched case-insensitively.",
    "schema": {"type": "string"},
}

#: Answers every authenticated operation may give.
_COMMON = {
    "401": {
        **_problem("No token, or an unknown, forged or revoked one."),
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    "422": _problem("A field or query parameter is not valid: `errors` names each."),
    "429": {
        **_problem("Over API_RATE_PER_MINUTE for this key."),
        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
    },
    "503": _problem("The database cannot take the request now; retry after Retry-After."),
}


def _operation(
    operation_id: str, summary: str, responses: dict[str, Any], **more: Any
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "responses": {**responses, **_COMMON},
        **more,
    }


def document(base: str = "/api") -> dict[str, Any]:
    """The OpenAPI document, its server at `base`: the path the API is mounted at, behind
    any prefix a reverse proxy gave the app (ASGI's root_path)."""
    return {**_document(), "servers": [{"url": base or "/"}]}


@functools.cache
def _document() -> dict[str, Any]:
    subscriber = {"description": "The subscriber.", "content": _json("SubscriberOut")}
    not_found = _problem("No subscriber has that address.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "campaign engine API",
            "version": "1.0.0",
            "description": "Subscribers, the delivery log and stats of one campaign engine. "
            "Errors are RFC 9457 problem details. Served on ADMIN_LISTEN.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/subscribers": {
                "post": _operation(
                    "createSubscriber",
                    "Add a subscriber: by double opt-in, or at once with a stated consent",
                    {
                        "201": {
                            **subscriber,
                            "headers": {"Location": {"schema": {"type": "string"}}},
                        },
                        "200": {
                            "description": "The address was known: the subscriber as stored "
                            "(nothing duplicated).",
                            "content": _json("SubscriberOut"),
                        },
                        "400": _problem("The body is not UTF-8 JSON."),
                        "409": _problem("The address bounced or complained: suppressed."),
                        "413": _problem("The body is over 16 KiB."),
                        "415": _problem("The body is not application/json."),
                    },
                    requestBody={"required": True, "content": _json("SubscriberCreate")},
                )
            },
            "/v1/subscribers/{email}": {
                "parameters": [_EMAIL],
                "get": _operation(
                    "getSubscriber",
                    "A subscriber: status, consents, enrollments, deliveries",
                    {"200": subscriber, "404": not_found},
                ),
                "patch": _operation(
                    "updateSubscriber",
                    "Set or clear (null) a subscriber's custom fields (the plan's `fields:`)",
                    {
                        "200": subscriber,
                        "400": _problem("The body is not UTF-8 JSON."),
                        "404": not_found,
                        "413": _problem("The body is over 16 KiB."),
                        "415": _problem("The body is not application/json."),
                    },
                    requestBody={"required": True, "content": _json("SubscriberUpdate")},
                ),
                "delete": _operation(
                    "forgetSubscriber",
                    "Forget a subscriber (as `campaign forget`): erased, suppressed by hash",
                    {"204": {"description": "Forgotten."}, "404": not_found},
                ),
            },
            "/v1/subscribers/{email}/unsubscribe": {
                "parameters": [_EMAIL],
                "post": _operation(
                    "unsubscribeSubscriber",
                    "Stop all email to a subscriber at once",
                    {"200": subscriber, "404": not_found},
                ),
            },
            "/v1/deliveries": {
                "get": _operation(
                    "listDeliveries",
                    "The delivery log after a cursor, by id",
                    {"200": {"description": "One page.", "content": _json("DeliveryPage")}},
                    parameters=[
                        {
                            "name": "since",
                            "in": "query",
                            "description": "A page's `next`; omitted: from the first delivery.",
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE,
                                "default": DEFAULT_PAGE,
                            },
                        },
                    ],
                )
            },
            "/v1/stats": {
                "get": _operation(
                    "getStats",
                    "Subscribers by status and per-step numbers (`campaign stats --json`)",
                    {"200": {"description": "The numbers.", "content": _json("StatsOut")}},
                )
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApiDocument",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": component_schemas(),
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `campaign api-keys create NAME`.",
                }
            },
        },
    }
