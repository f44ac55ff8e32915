"""Wiring: the supplychain service from its settings."""

from __future__ import annotations

from pydantic import Field

from collabnet.identity.v1 import identity_pb2, identity_pb2_grpc
from collabnet.improvement.v1 import events_pb2 as improvement_events
from collabnet.supplychain.v1 import supplychain_pb2, supplychain_pb2_grpc
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings
from collabnet_supplychain import events, store
from collabnet_supplychain.api import SupplyChainApi
from collabnet_supplychain.parties import Parties
from collabnet_supplychain.recalls import Recalls

NAME = "supplychain"


class Settings(ServiceSettings):
    grpc_port: int = 50062
    # Where identity answers consent and contact questions (COLLABNET_IDENTITY_ADDRESS).
    identity_address: str = "127.0.0.1:50061"
    # How often recalls whose announcement waits for identity are tried again.
    recall_retry_seconds: float = Field(default=5.0, gt=0)


def create(settings: Settings, **options: object) -> Service:
    def wire(runtime: Runtime) -> Wiring:
        channel = runtime.channel(
            settings.identity_address, identity_pb2.DESCRIPTOR.services_by_name["IdentityService"]
        )
        parties = Parties(identity_pb2_grpc.IdentityServiceStub(channel), runtime.service_token)
        recalls = Recalls(runtime.db, parties)
        api = Api(
            supplychain_pb2.DESCRIPTOR.services_by_name["SupplyChainService"],
            SupplyChainApi(runtime.db, parties, recalls),
            supplychain_pb2_grpc.add_SupplyChainServiceServicer_to_server,
        )
        improvement = runtime.consumer(
            "improvement", {improvement_events.RedesignRequested: events.on_redesign_requested}
        )

        async def retry_recalls() -> None:
            await recalls.job(settings.recall_retry_seconds)

        return Wiring(apis=[api], consumers=[improvement], jobs=[retry_recalls])

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
