"""Error answers: FastAPI's validation errors, the ones handlers raise in the same shape, and
HTTP errors; each can be written as JSON in UTF-8 whatever the request held."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from molgan.api.schemas import SMILES_PATTERN, json_safe


def field_error(loc: tuple[str | int, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 for the input at ``loc`` (e.g. ``("body", "smiles", 3)``), shaped like FastAPI's own
    validation errors so that clients read both the same way."""
    error = {"type": "value_error", "loc": loc, "msg": message, "input": value}
    return RequestValidationError([error])


async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, except that what JSON in UTF-8 cannot hold is echoed as text: a NaN or
    infinite number, a lone surrogate (``"\\ud800"`` in a JSON string) in a value or a key."""
    errors = [_explained(error) for error in exc.errors()]
    return JSONResponse({"detail": json_safe(jsonable_encoder(errors))}, status_code=422)


def _explained(error: dict[str, Any]) -> dict[str, Any]:
    """The error, with what the SMILES pattern means added to its message."""
    pattern = error.get("ctx", {}).get("pattern")
    if error.get("type") == "string_pattern_mismatch" and pattern == SMILES_PATTERN:
        return {**error, "msg": f"{error['msg']}: a SMILES is printable ASCII without spaces"}
    return error


async def http_error(_request: Request, exc: HTTPException) -> Response:
    """FastAPI's answer to an ``HTTPException``, with its detail made safe as ``invalid_request``
    makes a 422's."""
    if exc.status_code < 200 or exc.status_code in (204, 205, 304):  # no body allowed
        return Response(status_code=exc.status_code, headers=exc.headers)
    return JSONResponse({"detail": json_safe(jsonable_encoder(exc.detail))}, status_code=exc.status_code,
                        headers=exc.headers)
