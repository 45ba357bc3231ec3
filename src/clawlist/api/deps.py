"""Request dependencies: the services and the authenticated actor."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from clawlist.actions import auth
from clawlist.actions.actor import Actor
from clawlist.actions.services import Services
from clawlist.core.errors import unauthorized


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("Authorization header must be 'Bearer <token>'", "M_MISSING_TOKEN")
        return value.strip()
    return request.query_params.get("access_token")


async def get_actor(request: Request, svc: Annotated[Services, Depends(get_services)]) -> Actor:
    token = bearer_token(request)
    if not token:
        raise unauthorized("this endpoint needs an access token", "M_MISSING_TOKEN")
    return await auth.authenticate(svc, token)


async def optional_actor(request: Request, svc: Annotated[Services, Depends(get_services)]) -> Actor | None:
    token = bearer_token(request)
    if not token:
        return None
    return await auth.authenticate(svc, token)


ServicesDep = Annotated[Services, Depends(get_services)]
ActorDep = Annotated[Actor, Depends(get_actor)]
OptionalActorDep = Annotated[Actor | None, Depends(optional_actor)]


ModelT = TypeVar("ModelT", bound=BaseModel)


def parse_body(model: type[ModelT], raw: bytes) -> ModelT:
    """Validate a JSON body against `model`; failures become the same 400s FastAPI's would."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**err, "loc": ("body", *err.get("loc", ()))} for err in exc.errors(include_url=False)]
        ) from None
