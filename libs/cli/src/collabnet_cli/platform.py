"""Internal platforms read the domain streams directly, each through its own durable pull consumer.

``collabnet platform add NAME`` creates (or updates) a consumer named ``platform-NAME`` on each
domain's stream. It starts at the stream's first event and keeps its place on the server: the
platform fetches, handles and acks at its own pace, a restart continues after the last ack, and an
event not acked within the ack wait comes again (so handle idempotently, by ``ce-id``). Several
replicas of the platform may fetch from the same consumer; each event goes to one of them.

Payloads are the services' protobuf events; the headers carry the CloudEvents attributes
(``ce-id``, ``ce-type``, ``ce-source``, ``ce-time``) and the trace context. Internal platforms see
events unminimised: what they pass on to a partner must go through the partner's feed instead
(the ``analytics`` stream's EventShared, or AnalyticsService).
"""

from __future__ import annotations

import argparse
import re

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from collabnet_kit.bus import Bus, stream_name

DOMAINS = ("identity", "supplychain", "reviews", "community", "improvement", "analytics")
ACK_WAIT_SECONDS = 60.0
MAX_ACK_PENDING = 1000
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_name(text: str) -> str:
    if not _NAME.match(text):
        raise argparse.ArgumentTypeError(f"a platform's name is 1 to 64 letters, digits, - and _: {text!r}")
    return text


def durable_name(platform: str) -> str:
    return f"platform-{platform}"


def config(platform: str) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable_name(platform),
        description=f"the {platform} platform's reader (collabnet platform add)",
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ACK_WAIT_SECONDS,
        max_ack_pending=MAX_ACK_PENDING,
    )


async def add(bus: Bus, platform: str, domains: list[str]) -> list[tuple[str, str]]:
    """Create or update the platform's consumer on each domain's stream: (stream, durable) pairs.
    A stream not created yet (its service never started) is created as the service would, so no
    event is missed."""
    created = []
    for domain in domains:
        await bus.ensure_stream(domain)
        await bus.js.add_consumer(stream_name(domain), config(platform))
        created.append((stream_name(domain), durable_name(platform)))
    return created
