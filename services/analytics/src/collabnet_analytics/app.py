"""Wiring: the analytics service from its settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field, SecretStr

from collabnet.analytics.v1 import analytics_pb2, analytics_pb2_grpc
from collabnet_analytics import events, store
from collabnet_analytics.api import AnalyticsApi
from collabnet_kit.server import Api, Runtime, Service, Wiring
from collabnet_kit.settings import ServiceSettings

NAME = events.NAME
DEV_PSEUDONYM_KEY = "collabnet-development-pseudonym-key"


class Settings(ServiceSettings):
    required_in_production: ClassVar[tuple[str, ...]] = (*ServiceSettings.required_in_production, "pseudonym_key")

    grpc_port: int = 50066
    # The key of every partner's pseudonyms (COLLABNET_PSEUDONYM_KEY). Changing it changes every
    # pseudonym, so partners could no longer follow a person across exports made before and after.
    pseudonym_key: SecretStr = Field(default=SecretStr(DEV_PSEUDONYM_KEY), min_length=16)
    # Where ExportFeed may write on the service's own disk (COLLABNET_EXPORT_ROOT); a relative
    # destination is taken from here. Object stores (s3://, gs://) are written wherever asked.
    export_root: Path | None = None


def create(settings: Settings, **options: object) -> Service:
    key = settings.pseudonym_key.get_secret_value().encode()

    def wire(runtime: Runtime) -> Wiring:
        api = Api(
            analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
            AnalyticsApi(runtime.db, key, settings.export_root or settings.state_dir / "exports"),
            analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server,
        )
        sharing = events.Sharing(key)
        consumers = [runtime.consumer(name, sharing.handlers(module)) for name, module in events.DOMAINS.items()]
        consumers.append(runtime.consumer("identity", events.IDENTITY_HANDLERS))
        return Wiring(apis=[api], consumers=consumers)

    return Service(settings, wire, histories=[store.HISTORY], publishes=[NAME], **options)  # type: ignore[arg-type]
