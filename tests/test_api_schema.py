"""Property-based requests generated from the service's own OpenAPI schema (schemathesis).

Every operation gets valid and invalid inputs; each answer must be a documented status code with
a body, content type and headers that match the schema, and never a 5xx.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance

from molgan.api.app import create_app
from molgan.api.settings import Settings

# A small limit keeps each generated request cheap; the schema still says where the limit is.
MAX_N = 25


def service_settings(checkpoint: Path | None) -> Settings:
    return Settings(checkpoint=checkpoint, max_molecules=MAX_N, worker_threads=2)


# The schema does not depend on the checkpoint (which only the lifespan loads), so it can be read
# at collection time from an app that is never started; requests go to the app of the fixture.
schema = schemathesis.openapi.from_dict(create_app(service_settings(None)).openapi())


@pytest.fixture(scope="module")
def app(api_checkpoint: Path) -> Iterator[Any]:
    service = create_app(service_settings(api_checkpoint))
    assert service.openapi() == schema.raw_schema
    yield service
    shutdown_lifespans()  # schemathesis starts the app's lifespan on first use


@schema.parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_answers_match_its_schema(case: schemathesis.Case, app: Any) -> None:
    # Not every string the schema allows is a molecule (/v1/depict answers 422 for those), and a
    # temperature with mode "argmax" is refused: those are documented 422s, not failures.
    case.call_and_validate(app=app, excluded_checks=[positive_data_acceptance])
