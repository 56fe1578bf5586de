"""JSON bodies parsed and validated in a worker thread, for routes whose bodies are large.

FastAPI parses and validates a route's body on the event loop. For ``POST /train`` that
is a 16 MB body of up to 100,000 pairs: about a second of pydantic building objects,
during which the service answers nothing else. A route that takes
``Annotated[Model, Depends(JsonBody(Model))]`` gets the same model, the same 422s and
400s as FastAPI's own, with the work done off the loop; ``documented(Model)`` keeps
the body in the OpenAPI schema (``install_openapi`` adds its component).
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fastapi import HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

M = TypeVar("M", bound=BaseModel)
REF_PREFIX = "#/components/schemas/"
DOCUMENTED: list[type[BaseModel]] = []  # models whose schemas the OpenAPI needs


class JsonBody(Generic[M]):
    """A dependency: the request's JSON body as ``model``, validated in a worker thread
    (with pydantic's validation ``context`` of the request, where one is given)."""

    def __init__(
        self, model: type[M], context: Callable[[Request], dict[str, Any]] | None = None
    ) -> None:
        self.model = model
        self.context = context

    async def __call__(self, request: Request) -> M:
        raw = await request.body()  # its size already bounded by BodySizeLimit
        is_json = _is_json(request.headers.get("content-type"))
        context = self.context(request) if self.context else None
        return await run_in_threadpool(parse_body, self.model, raw, is_json, context)


def parse_body(
    model: type[M], raw: bytes, is_json: bool, context: dict[str, Any] | None = None
) -> M:
    """``raw`` as ``model``, refused as FastAPI refuses a body it parses itself."""
    if not raw:
        raise RequestValidationError(
            [{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}]
        )
    data: Any = raw  # not JSON: validated as the bytes it is, and refused
    if is_json:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body", exc.pos),
                        "msg": "JSON decode error",
                        "input": {},
                        "ctx": {"error": exc.msg},
                    }
                ]
            ) from None
        except (ValueError, RecursionError):  # not UTF-8, or nested past the parser's depth
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, "There was an error parsing the body"
            ) from None
    try:
        # as FastAPI validates
        return model.model_validate(data, from_attributes=True, context=context)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors]
        ) from None


def documented(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` of a route that reads ``model`` through ``JsonBody``."""
    DOCUMENTED.append(model)
    body = {"$ref": REF_PREFIX + model.__name__}
    refusal = {"$ref": REF_PREFIX + "HTTPValidationError"}
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "422": {
                "description": "Validation Error",
                "content": {"application/json": {"schema": refusal}},
            }
        },
    }


def add_components(components: dict[str, Any]) -> None:
    """Put the schemas of ``documented`` bodies (and the models they use) in ``components``."""
    for model in DOCUMENTED:
        schema = model.model_json_schema(ref_template=REF_PREFIX + "{model}")
        for name, definition in schema.pop("$defs", {}).items():
            components.setdefault(name, definition)  # models shared with responses: same
        components[model.__name__] = schema


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return True  # FastAPI reads a body without a type as JSON too
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    is_application = message.get_content_maintype() == "application"
    return is_application and (subtype == "json" or subtype.endswith("+json"))
