"""Resources under /v1: each a row of the route table, mapped onto one RPC of one service.

A route names its RPC; the request message is filled from the path, the query string and the JSON
body (in that order of precedence for nothing: each field comes from one place), and the reply
goes back as JSON (see ``schemas``). The OpenAPI document is built from the same descriptors.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Optional

import grpc
from fastapi import APIRouter, Body, Header, Path, Query, Request
from fastapi.responses import JSONResponse
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from collabnet_gateway import schemas
from collabnet_gateway.problems import Problem
from collabnet_kit.errors import DomainError, InvalidArgument


@dataclass(frozen=True)
class Route:
    method: Literal["GET", "POST", "PATCH", "PUT", "DELETE"]
    path: str
    service: str
    rpc: str
    summary: str
    tag: str
    status: int = 200
    # None: no body; "*": the request's fields not in the path; a field name: that message field.
    body: str | None = None
    query: tuple[str, ...] = ()
    # Accepts an Idempotency-Key (creating POSTs).
    creates: bool = False


Call = Callable[[str, str, Message], Awaitable[Message]]
"""(service, rpc, request) -> reply: how a route reaches its service."""
Idempotent = Callable[[Request, Callable[[], Awaitable[JSONResponse]]], Awaitable[JSONResponse]]


def _path_fields(path: str) -> list[str]:
    return [part[1:-1] for part in path.replace(":", "/").split("/") if part.startswith("{") and part.endswith("}")]


def _query_annotation(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        names = tuple(schemas.enum_names(schemas.enum_type(field)).values())
        single: Any = Literal[names]
    elif field.type == FieldDescriptor.TYPE_MESSAGE:
        single = datetime  # only Timestamps travel in query strings
    elif field.type == FieldDescriptor.TYPE_BOOL:
        single = bool
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        single = float
    elif field.type == FieldDescriptor.TYPE_STRING or field.type == FieldDescriptor.TYPE_BYTES:
        single = str
    else:
        single = schemas.int_annotation(field, strict=False)
    if field.is_repeated:
        return list[single]
    return single


class RouteBuilder:
    def __init__(
        self,
        services: dict[str, ServiceDescriptor],
        call: Call,
        idempotent: Idempotent,
        models: schemas.Models,
        max_page_size: int,
    ) -> None:
        self.services = services
        self.call = call
        self.idempotent = idempotent
        self.models = models
        self.max_page_size = max_page_size
        # (method, path) of the routes whose JSON body is one field of the request: that field.
        self.body_fields: dict[tuple[str, str], str] = {}

    def method(self, route: Route) -> MethodDescriptor:
        return self.services[route.service].methods_by_name[route.rpc]

    def add(self, router: APIRouter, routes: Sequence[Route]) -> None:
        for route in routes:
            method = self.method(route)
            endpoint = self._endpoint(route, method.input_type)
            if route.body not in (None, "*"):
                self.body_fields[(route.method, route.path)] = route.body
            router.add_api_route(
                route.path,
                endpoint,
                methods=[route.method],
                summary=route.summary,
                tags=[route.tag],
                status_code=route.status,
                response_model=self.models.of(schemas.output_type(method)),
                responses=PROBLEM_RESPONSES,
                operation_id=f"{route.service}_{route.rpc}",
            )

    def _endpoint(self, route: Route, request_type: Descriptor) -> Callable[..., Awaitable[JSONResponse]]:
        fields = request_type.fields_by_name
        in_path = _path_fields(route.path)
        parameters = [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=Request)]
        for name in in_path:
            parameters.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=str, default=Path(...))
            )
        for name in route.query:
            annotation = _query_annotation(fields[name])
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[annotation],  # noqa: UP045
                    default=Query(None),
                )
            )
        body_model = None
        if route.body == "*":
            body_model = self.models.of(request_type, exclude=frozenset(in_path) | frozenset(route.query))
        elif route.body is not None:
            body_model = self.models.of(schemas.message_type(fields[route.body]))
        if body_model is not None:
            parameters.append(
                # Every field is optional in proto3: an action whose fields all come from the path
                # (``:leave``, ``:accept``) may be posted without a body.
                inspect.Parameter(
                    "body",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[body_model],  # noqa: UP045
                    default=Body(None),
                )
            )
        if route.creates:
            parameters.append(
                inspect.Parameter(
                    "idempotency_key",
                    inspect.Parameter.KEYWORD_ONLY,
                    annotation=Optional[str],  # noqa: UP045
                    default=Header(
                        None,
                        alias="Idempotency-Key",
                        description="Retrying a request with the same key returns the first response.",
                    ),
                )
            )
        message_class = GetMessageClass(request_type)

        async def endpoint(**kwargs: Any) -> JSONResponse:
            request: Request = kwargs.pop("request")
            kwargs.pop("idempotency_key", None)
            body = kwargs.pop("body", None)

            async def respond() -> JSONResponse:
                message = self._request(route, message_class(), kwargs, body, request)
                try:
                    reply = await self.call(route.service, route.rpc, message)
                except grpc.aio.AioRpcError as error:
                    raise Problem.of_rpc(error) from None
                return JSONResponse(schemas.to_json(reply), status_code=route.status)

            if route.creates:
                return await self.idempotent(request, respond)
            return await respond()

        endpoint.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        endpoint.__name__ = f"{route.service}_{route.rpc}"
        return endpoint

    def _request(self, route: Route, message: Message, params: dict[str, Any], body: Any, request: Request) -> Message:
        values = {k: _query_value(v) for k, v in params.items() if v is not None}
        size = values.get("page_size")
        if isinstance(size, int) and not 0 <= size <= self.max_page_size:
            raise Problem.of_domain(InvalidArgument.field("page_size", f"must be between 0 and {self.max_page_size}"))
        try:
            schemas.fill(message, values)
            if body is not None:
                data = body.model_dump(mode="json", exclude_none=True)
                target = message if route.body == "*" else getattr(message, route.body or "")
                schemas.fill(target, data, "" if route.body == "*" else f"{route.body}.")
                if route.body != "*":
                    target.SetInParent()
            key = request.headers.get("idempotency-key")
            takes_key = "idempotency_key" in message.DESCRIPTOR.fields_by_name
            if key and takes_key and not getattr(message, "idempotency_key"):  # noqa: B009
                setattr(message, "idempotency_key", key)  # noqa: B010
        except DomainError as error:
            raise Problem.of_domain(error) from None
        return message


def _query_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_query_value(v) for v in value]
    return value


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "description": description,
        "content": {
            "application/problem+json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string"},
                        "trace_id": {"type": "string"},
                        "errors": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {"field": {"type": "string"}, "description": {"type": "string"}},
                            },
                        },
                    },
                    "required": ["type", "title", "status"],
                }
            }
        },
    }
    for status, description in {
        400: "The request is malformed; `errors` names the fields at fault.",
        401: "No valid API key.",
        403: "The key's partner may not do this (or act for the party it names).",
        404: "Not found, or not visible to the caller.",
        409: "Conflicts with the current state (exists already, or a retry in flight).",
        422: "Well formed, but not allowed in the resource's current state.",
        429: "Rate limit exceeded; see Retry-After.",
        503: "A service the request needs is unavailable.",
        504: "A service the request needs did not answer in time.",
    }.items()
}


def bad_query(field: str, description: str) -> Problem:
    return Problem.of_domain(InvalidArgument.field(field, description))
