"""Routes whose body is a JSON object: a body that is not JSON is told so before FastAPI reads it.

FastAPI reads a body of another content type as bytes and answers 422 "Input should be a valid
dictionary", and turns JSON nested too deep for its parser into a bare 400 "There was an error
parsing the body". ``JsonBodyRoute`` answers those with what is wrong: 415 when the body is not
sent as ``application/json``, 400 when it is not UTF-8 or nested more than ``MAX_JSON_DEPTH``
levels (the request bodies of this API are one or two levels deep). An empty body is left to
FastAPI (a 422: the body is required).
"""

from __future__ import annotations

import email.message
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

MAX_JSON_DEPTH = 32

# A JSON string, escapes included; unrolled so that long strings cost no backtracking.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(rb"[^\[\]{}]+")


def json_depth(body: bytes, limit: int) -> int:
    """How deep the arrays and objects of ``body`` nest (brackets inside strings do not count),
    counted up to ``limit + 1``: the scan stops once it is over the limit."""
    brackets = _NOT_BRACKET.sub(b"", _STRING.sub(b"", body))
    depth = deepest = 0
    for byte in brackets:
        if byte in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def is_json(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json``, parameters (charset) aside: the types
    FastAPI parses as JSON."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    json_subtype = subtype == "json" or subtype.endswith("+json")
    return message.get_content_maintype() == "application" and json_subtype


def check_json_body(content_type: str | None, body: bytes) -> None:
    """``HTTPException`` (415 or 400) saying why ``body`` is not JSON this API reads."""
    if not is_json(content_type):
        got = f"it was sent as {content_type!r}" if content_type else "it was sent without a Content-Type"
        raise HTTPException(415, f"the request body must be JSON with Content-Type: application/json; {got}")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HTTPException(400, f"the request body is not UTF-8 text (byte {exc.start} is not)") from None
    if json_depth(body, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise HTTPException(
            400, f"the JSON body is nested more than {MAX_JSON_DEPTH} levels deep; requests of this "
            "API are objects of plain values and lists",
        )


class JsonBodyRoute(APIRoute):
    """An ``APIRoute`` whose non-empty body must pass ``check_json_body`` before FastAPI reads it."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            body = await request.body()  # kept by the request: FastAPI's handler reads it again
            if body:
                check_json_body(request.headers.get("content-type"), body)
            return await handler(request)

        return checked
