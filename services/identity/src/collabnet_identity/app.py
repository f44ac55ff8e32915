"""Wiring: the identity service from its settings."""

from __future__ import annotations

from collabnet.identity.v1 import identity_pb2, identity_pb2_grpc
from collabnet_identity import store
from collabnet_identity.api import IdentityApi
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = "identity"


class Settings(ServiceSettings):
    grpc_port: int = 50061


def create(settings: Settings, **options: object) -> Service:
    def wire(runtime: Runtime) -> Wiring:
        api = Api(
            identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
            IdentityApi(runtime.db),
            identity_pb2_grpc.add_IdentityServiceServicer_to_server,
        )
        return Wiring(apis=[api])

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
