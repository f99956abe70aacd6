"""422 answers: FastAPI's own validation errors and the ones handlers raise in the same shape."""

from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from molgan.api.schemas import json_safe


def field_error(loc: tuple[str | int, ...], message: str, value: Any) -> RequestValidationError:
    """A 422 for the input at ``loc`` (e.g. ``("body", "smiles", 3)``), shaped like FastAPI's own
    validation errors so that clients read both the same way."""
    error = {"type": "value_error", "loc": loc, "msg": message, "input": value}
    return RequestValidationError([error])


async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422, except that a NaN or infinite input is echoed as text: JSON cannot hold it."""
    return JSONResponse({"detail": json_safe(jsonable_encoder(exc.errors()))}, status_code=422)
