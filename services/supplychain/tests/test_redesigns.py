"""RedesignRequested from the improvement program: a revision proposal the maker confirms or declines."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest
from supplychain_testing import (
    SERVICE,
    EventLog,
    Services,
    SupplyChain,
    only,
    partner,
    precondition,
    refused,
    register,
)

from collabnet.improvement.v1 import events_pb2 as improvement
from collabnet.supplychain.v1 import events_pb2
from collabnet.supplychain.v1 import supplychain_pb2 as pb
from collabnet_kit.bus import Bus, cloudevent_headers, deadletter_subject, stream_name
from collabnet_kit.nats_server import NatsServer
from collabnet_kit.testing import eventually


@pytest.fixture
async def improvement_bus(nats_server: NatsServer, services: Services) -> AsyncIterator[Bus]:
    bus = Bus(nats_server.url, name="improvement-test")
    await bus.connect()
    await bus.ensure_stream("improvement")
    yield bus
    await bus.close()


async def publish(bus: Bus, event: improvement.RedesignRequested, event_id: str, copy: str = "") -> None:
    """Publish as improvement would. ``copy`` makes another message of the same event, as a
    redelivery after the stream's de-duplication window would be."""
    headers = cloudevent_headers(event_id, event.DESCRIPTOR.full_name, "/collabnet/improvement", datetime.now(UTC))
    if copy:
        headers["Nats-Msg-Id"] = f"{event_id}-{copy}"
    await bus.publish(event.DESCRIPTOR.full_name, event.SerializeToString(), headers)


async def proposals(supplychain: SupplyChain, maker: str) -> list[pb.RevisionProposal]:
    listed = await supplychain.ListRevisionProposals(pb.ListRevisionProposalsRequest(), metadata=partner(maker))
    return list(listed.proposals)


async def test_a_redesign_request_becomes_one_proposal_however_often_it_arrives(
    supplychain: SupplyChain, improvement_bus: Bus
) -> None:
    bike = await register(supplychain, "maker", "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    request = improvement.RedesignRequested(
        initiative_id="init-1",
        product_id=bike.product_id,
        maker_id="someone-the-program-guessed",
        changes="stiffer rear fork",
        reason="2-star reviews: the fork flexes",
    )
    await publish(improvement_bus, request, "evt-1")
    found = await eventually(lambda: proposals(supplychain, "maker"))
    await publish(improvement_bus, request, "evt-1", copy="again")  # the same event, redelivered
    await publish(improvement_bus, request, "evt-2")  # the same request, as a new event
    other = improvement.RedesignRequested(
        initiative_id="init-1", product_id=bike.product_id, changes="wider tyres", reason="comfort"
    )
    await publish(improvement_bus, other, "evt-3")

    async def both() -> list[pb.RevisionProposal] | None:
        listed = await proposals(supplychain, "maker")
        return listed if len(listed) == 2 else None

    listed = await eventually(both)
    assert [(p.changes, p.maker_id, p.status, p.initiative_id) for p in listed] == [
        ("stiffer rear fork", "maker", pb.PROPOSAL_STATUS_PROPOSED, "init-1"),
        ("wider tyres", "maker", pb.PROPOSAL_STATUS_PROPOSED, "init-1"),
    ]
    assert listed[0].proposal_id == found[0].proposal_id
    # Another partner sees none of the maker's proposals.
    assert await proposals(supplychain, "other") == []
    everything = await supplychain.ListRevisionProposals(
        pb.ListRevisionProposalsRequest(product_id=bike.product_id, page_size=1), metadata=SERVICE
    )
    assert len(everything.proposals) == 1 and everything.next_page_token


async def test_the_maker_confirms_a_proposal_into_the_next_revision_or_declines_it(
    supplychain: SupplyChain, improvement_bus: Bus, events: EventLog
) -> None:
    bike = await register(supplychain, "maker", "BIKE-1", "City bike", pb.PRODUCT_KIND_FINISHED_GOOD)
    for number, changes in enumerate(("stiffer rear fork", "wider tyres")):
        await publish(
            improvement_bus,
            improvement.RedesignRequested(
                initiative_id="init-1", product_id=bike.product_id, changes=changes, reason="reviews"
            ),
            f"evt-{number}",
        )

    async def two() -> list[pb.RevisionProposal] | None:
        listed = await proposals(supplychain, "maker")
        return listed if len(listed) == 2 else None

    fork, tyres = await eventually(two)
    await events.drain(supplychain)
    await refused(
        supplychain.ConfirmRevisionProposal(
            pb.ConfirmRevisionProposalRequest(proposal_id=fork.proposal_id), metadata=partner("other")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    confirmed = await supplychain.ConfirmRevisionProposal(
        pb.ConfirmRevisionProposalRequest(proposal_id=fork.proposal_id, changes="steel fork, 2 mm thicker"),
        metadata=partner("maker"),
    )
    assert (confirmed.status, confirmed.revision, confirmed.decided_by) == (
        pb.PROPOSAL_STATUS_CONFIRMED,
        2,
        "maker",
    )
    revised = only(await events.drain(supplychain), events_pb2.ProductRevised)
    assert (revised.revision, revised.changes, revised.reason, revised.initiative_id) == (
        2,
        "steel fork, 2 mm thicker",
        "reviews",
        "init-1",
    )
    history = await supplychain.ListProductRevisions(
        pb.ListProductRevisionsRequest(product_id=bike.product_id), metadata=SERVICE
    )
    assert history.revisions[-1].proposal_id == fork.proposal_id
    await precondition(
        supplychain.ConfirmRevisionProposal(
            pb.ConfirmRevisionProposalRequest(proposal_id=fork.proposal_id), metadata=partner("maker")
        ),
        "status",
    )
    await refused(
        supplychain.DeclineRevisionProposal(
            pb.DeclineRevisionProposalRequest(proposal_id=tyres.proposal_id), metadata=partner("maker")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    declined = await supplychain.DeclineRevisionProposal(
        pb.DeclineRevisionProposalRequest(proposal_id=tyres.proposal_id, reason="the frame cannot take them"),
        metadata=partner("maker"),
    )
    assert (declined.status, declined.decline_reason) == (pb.PROPOSAL_STATUS_DECLINED, "the frame cannot take them")
    await precondition(
        supplychain.ConfirmRevisionProposal(
            pb.ConfirmRevisionProposalRequest(proposal_id=tyres.proposal_id), metadata=partner("maker")
        ),
        "status",
    )
    still = await supplychain.GetProduct(pb.GetProductRequest(product_id=bike.product_id), metadata=SERVICE)
    assert still.revision == 2
    assert await events.drain(supplychain) == []
    open_ones = await supplychain.ListRevisionProposals(
        pb.ListRevisionProposalsRequest(status=pb.PROPOSAL_STATUS_PROPOSED), metadata=partner("maker")
    )
    assert open_ones.proposals == []
    await refused(
        supplychain.ConfirmRevisionProposal(
            pb.ConfirmRevisionProposalRequest(proposal_id="no-such"), metadata=partner("maker")
        ),
        grpc.StatusCode.NOT_FOUND,
    )


async def test_a_redesign_request_naming_no_product_goes_to_the_dead_letters(
    supplychain: SupplyChain, improvement_bus: Bus, services: Services
) -> None:
    await publish(improvement_bus, improvement.RedesignRequested(initiative_id="init-1", changes="x"), "evt-bad")

    async def dead() -> int:
        info = await improvement_bus.js.stream_info(stream_name("deadletter"))
        return int(info.state.messages)

    assert await eventually(dead, timeout=15) == 1
    message = await improvement_bus.js.get_last_msg(stream_name("deadletter"), deadletter_subject("supplychain"))
    assert message.headers is not None and message.headers["ce-id"] == "evt-bad"
    assert (
        await supplychain.ListRevisionProposals(pb.ListRevisionProposalsRequest(), metadata=SERVICE)
    ).proposals == []
