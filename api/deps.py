"""What route handlers ask FastAPI for: this app's settings, its metrics and the loaded model.

``create_app`` keeps them in ``app.state`` (the model from the lifespan); these functions are the
only readers, so a handler never touches ``app.state`` itself. Each is ``async``: FastAPI would
run a plain ``def`` dependency in a worker thread, which is wasted effort for an attribute read.
"""

from typing import Annotated

from fastapi import Depends, HTTPException, Request

from molgan.api.metrics import ServiceMetrics
from molgan.api.service import Service
from molgan.api.settings import Settings


async def app_settings(request: Request) -> Settings:
    """The settings this app was created with."""
    return request.app.state.settings


async def app_metrics(request: Request) -> ServiceMetrics:
    """This app's Prometheus metrics."""
    return request.app.state.metrics


async def loaded_service(request: Request) -> Service | None:
    """The loaded model and its pool; ``None`` before the lifespan has loaded it."""
    return request.app.state.service


SettingsDep = Annotated[Settings, Depends(app_settings)]
MetricsDep = Annotated[ServiceMetrics, Depends(app_metrics)]
MaybeServiceDep = Annotated[Service | None, Depends(loaded_service)]


async def ready_service(service: MaybeServiceDep, settings: SettingsDep) -> Service:
    """The loaded model; a 503 with Retry-After for requests that arrive before it is loaded."""
    if service is None:
        raise HTTPException(
            503, "the model is not loaded", headers={"Retry-After": str(settings.retry_after_s)}
        )
    return service


ServiceDep = Annotated[Service, Depends(ready_service)]
