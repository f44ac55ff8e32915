"""Bad input: generated requests against the whole stack, through the gateway and straight to every
service's RPCs. None may fail on the server's side (no 5xx, no INTERNAL, UNKNOWN or DATA_LOSS), and
a refused one may not leave anything written behind.

- The gateway: schemathesis over its OpenAPI document, with a real partner's key: every operation
  stateless (valid and invalid requests, and requests naming real objects), then stateful, chaining
  operations over the links schemathesis infers from the document (the document declares none).
- gRPC: for each RPC of each service, request messages generated from its descriptor
  (``protobuf_strategies``), sent with a real partner's principal.

Around each request the databases are fingerprinted (``state``) while nothing else runs: after a
request that wrote something, the test waits until its events have been handled everywhere before
it sends the next. Examples per operation and per RPC: ``sizes.examples``; bounded runs are
derandomized, so CI sends the same requests every time.
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
import hypothesis
import pytest
import requests
import schemathesis
from google.protobuf import text_format
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, Phase, given
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure

from collabnet.analytics.v1 import analytics_pb2
from collabnet.community.v1 import community_pb2
from collabnet.identity.v1 import identity_pb2
from collabnet.improvement.v1 import improvement_pb2
from collabnet.reviews.v1 import reviews_pb2
from collabnet.supplychain.v1 import supplychain_pb2
from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, WebhookEndpoint
from collabnet_cli.stack import Stack
from collabnet_cli.story import ClosedLoop
from collabnet_kit.principal import Principal, PrincipalSigner
from collabnet_kit.settings import ServiceSettings
from tests.reliability.conftest import SOAK, Sizes
from tests.reliability.protobuf_strategies import MessageStrategies
from tests.reliability.state import IDEMPOTENCY_TABLE, Databases, Fingerprint

T = TypeVar("T")

SERVICES: dict[str, ServiceDescriptor] = {
    "identity": identity_pb2.DESCRIPTOR.services_by_name["IdentityService"],
    "community": community_pb2.DESCRIPTOR.services_by_name["CommunityService"],
    "reviews": reviews_pb2.DESCRIPTOR.services_by_name["ReviewsService"],
    "supplychain": supplychain_pb2.DESCRIPTOR.services_by_name["SupplyChainService"],
    "improvement": improvement_pb2.DESCRIPTOR.services_by_name["ImprovementService"],
    "analytics": analytics_pb2.DESCRIPTOR.services_by_name["AnalyticsService"],
}
FAILED_ON_THE_SERVER = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DATA_LOSS,
    # No service sets a quota: this status comes from the transport, refusing an answer too large
    # for a call's trailers (the refusal the service meant never arrives).
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
NOT_A_REFUSAL = {grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
"""Answers after which the service may have written (or may still write): no fingerprint check."""
CALL_TIMEOUT = 30.0
SEED = 20261122

# Tables an id of which a path or field may name, by the name it goes by there (``order_id``).
ID_TABLES = {
    "order": "purchase_order",
    "case": "feedback_case",
    "leg": "shipment_leg",
    "invitation": "codesign_invitation",
    "request": "supplier_request",
    "webhook": "webhook_subscription",
    "delivery": "webhook_delivery",
    "action": "case_action",
    "proposal": "revision_proposal",
    "maker": "partner",
    "retailer": "partner",
    "supplier": "partner",
    "carrier": "partner",
    "customer": "party",
    "author": "party",
    "from_party": "party",
    "to_party": "party",
    "component": "product",
}
NEVER_NAMED = {"api_key"}
"""The fuzzing partner could revoke its own key with a real id and refuse itself everything after."""


@pytest.fixture
def component_env() -> Callable[[], dict[str, str]]:
    # A fuzzer's requests come one after another from one key, faster than any partner's: the
    # gateway's per-key rate limit would answer most of them 429 before they reach anything.
    return lambda: {"COLLABNET_RATE_LIMIT_PER_SECOND": "100000", "COLLABNET_RATE_LIMIT_BURST": "100000"}


def hypothesis_settings(examples: int, **more: Any) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        derandomize=not SOAK,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
        **more,
    )


@dataclass
class World:
    """What exists before the generated requests: the closed loop's partners and objects."""

    retailer: Caller
    maker: Caller
    operator: Caller
    customer_id: str
    ids: dict[str, list[str]]  # table name -> ids of its rows
    story: dict[str, str]  # table name -> the closed loop's own object of that kind

    def named(self, name: str) -> list[str]:
        """Real ids a field or path parameter called ``name`` (``product_id``) could take, the
        closed loop's own object of that kind first (the partner's customer, the product it sells)."""
        stem = name.removesuffix("_ids").removesuffix("_id")
        table = ID_TABLES.get(stem, stem)
        if table in NEVER_NAMED:
            return []
        ids = self.ids.get(table) or self.every_id
        first = self.story.get(table)
        return [first, *(i for i in ids if i != first)] if first else ids

    @property
    def every_id(self) -> list[str]:
        return sorted({i for t, ids in self.ids.items() if t not in NEVER_NAMED for i in ids})


async def make_world(stack: Stack, dbs: Databases) -> World:
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    with WebhookEndpoint() as webhooks:
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            loop = ClosedLoop(gateway, Caller(key.partner_id, key.secret), webhooks)
            await loop.run()
    await dbs.settle()
    story = {
        "party": loop.ids["C"],
        "partner": loop.retailer.partner_id,
        "product": loop.ids["P"],
        "webhook_subscription": loop.ids["webhook"],
        "purchase_order": loop.ids["order"],
        "feedback_case": loop.ids["case"],
        **{kind: loop.ids[kind] for kind in ("listing", "lot", "community", "question", "answer", "review")},
        **{kind: loop.ids[kind] for kind in ("initiative", "objective")},
    }
    return World(loop.retailer, loop.maker, loop.operator, loop.ids["C"], await dbs.ids(), story)


@dataclass
class Findings:
    """What the generated requests found and how they were answered."""

    failures: list[str] = field(default_factory=list)  # failed on the server's side, or misanswered
    partial_writes: list[str] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    codes: Counter[int] = field(default_factory=Counter)
    refusals_checked: int = 0
    writes_seen: int = 0  # accepted requests after which a database had changed
    requests: int = 0


class Checker:
    """Sends one request at a time from a worker thread (schemathesis and hypothesis are
    synchronous), fingerprinting the databases on the test's loop around each."""

    def __init__(self, loop: asyncio.AbstractEventLoop, dbs: Databases, settled: dict[str, Fingerprint]) -> None:
        self.loop = loop
        self.dbs = dbs
        self.settled = settled

    def wait(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()

    def around(self, names: list[str], send: Callable[[], T]) -> tuple[T, list[tuple[str, list[str]]]]:
        """``send()``'s answer and what changed in the databases ``names`` meanwhile (database,
        tables); after any change, waits until the stack is quiet again."""
        before = {n: self.settled[n] for n in names}
        answer = send()
        after = self.wait(self.dbs.fingerprints(names))
        changed = [(n, before[n].changed(after[n])) for n in names if after[n] != before[n]]
        if changed:
            self.settled = self.wait(self.dbs.settle())
        return answer, changed


# --- the gateway ---------------------------------------------------------------------------------


class GatewayFuzzer:
    def __init__(self, checker: Checker, base_url: str, findings: Findings) -> None:
        self.checker = checker
        self.base_url = base_url
        self.findings = findings
        self.session = requests.Session()
        self.operations: set[str] = set()
        self.sent = 0

    def call(self, case: Case[Any], **kwargs: Any) -> Any:
        """One generated request, checked: no 5xx, and a 4xx leaves every database as it was."""
        key = next((k for k in case.headers or {} if k.lower() == "idempotency-key"), None)
        if key is not None and case.headers[key]:
            # Generated keys repeat (derandomized, short): most creating requests would be answered
            # "this Idempotency-Key was used for a different request" before reaching anything.
            self.sent += 1
            case.headers[key] = f"{case.headers[key]}-{self.sent}"

        def send() -> Any:
            return case.call(base_url=self.base_url, session=self.session, timeout=CALL_TIMEOUT, **kwargs)

        response, changed = self.checker.around(list(self.checker.settled), send)
        status = int(response.status_code)
        self.findings.requests += 1
        self.findings.statuses[f"{status // 100}xx"] += 1
        self.findings.codes[status] += 1
        self.operations.add(case.operation.label)
        try:
            case.validate_response(response, checks=[not_a_server_error])
        except (AssertionError, Failure) as failure:
            self.findings.failures.append(f"{case.operation.label}: {failure}\n{case.as_curl_command()}")
        if status == 429:
            # The partner's rate limit is out of reach here (``component_env``): a 429 is another
            # refusal under the wrong name (a service's RESOURCE_EXHAUSTED).
            self.findings.failures.append(
                f"{case.operation.label} answered 429: {response.text[:500]}\n{case.as_curl_command()}"
            )
        if status < 400:
            self.findings.writes_seen += bool(changed)
        if 400 <= status < 500:
            self.findings.refusals_checked += 1
            # The one write a refusal makes by design: its answer, kept under the Idempotency-Key.
            written = [
                (db, [t for t in tables if not (key is not None and db == "gateway" and t == IDEMPOTENCY_TABLE)])
                for db, tables in changed
            ]
            written = [(db, tables) for db, tables in written if tables]
            if written:
                self.findings.partial_writes.append(
                    f"{case.operation.label} answered {status} but wrote {written}\n{case.as_curl_command()}"
                )
        return response

    def stateless(self, schema: Any, world: World, examples: int) -> None:
        """Every operation, ``examples`` requests at most: about half invalid (in what the query,
        headers or body may say), half valid; both name real objects in the path (random ids would
        mostly be answered 404 before anything else is looked at), some valid ones acting for the
        partner's customer."""
        for result in schema.get_all_operations():
            operation = result.ok()
            real = {p.name: world.named(p.name)[0] for p in operation.path_parameters if world.named(p.name)} or None
            valid = st.one_of(
                operation.as_strategy(GenerationMode.POSITIVE, path_parameters=real),
                operation.as_strategy(
                    GenerationMode.POSITIVE, path_parameters=real, headers={"X-On-Behalf-Of": world.customer_id}
                ),
            )
            groups = [(valid, examples // 2)]
            # A path parameter is any string: an operation with nothing else has nothing to get wrong.
            if len(operation.query) or len(operation.headers) or len(operation.body):
                groups.append(
                    (operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=real), examples - examples // 2)
                )
            for strategy, count in groups:

                @hypothesis_settings(max(count, 1))
                @given(strategy)
                def fuzz(case: Case[Any]) -> None:
                    self.call(case)

                fuzz()

    def stateful(self, schema: Any, examples: int) -> int:
        """Sequences along the links schemathesis infers from the response schemas (a create's id
        into the reads and actions on what it created); returns how many links it found."""
        fuzzer = self
        inferred = schema.as_state_machine()

        class Machine(inferred):  # type: ignore[misc,valid-type]
            def call(self, case: Case[Any], **kwargs: Any) -> Any:
                return fuzzer.call(case, **kwargs)

            def validate_response(self, response: Any, case: Case[Any], *args: Any, **kwargs: Any) -> None:
                pass  # checked in ``call``

        Machine.run(settings=hypothesis_settings(examples, stateful_step_count=10))
        return int(schema.statistic.transitions.total)


async def fuzz_the_gateway(
    stack: Stack, world: World, checker: Checker, sizes: Sizes, figures: dict[str, object]
) -> Findings:
    base_url = f"http://{stack.address('gateway')}"
    findings = Findings()

    def run() -> tuple[int, int, int, int]:
        # The gateway builds its document on the first request for it, which takes a while on a busy machine.
        schema: Any = schemathesis.openapi.from_url(f"{base_url}/openapi.json", timeout=120)
        schema.config.update(base_url=base_url, headers={"Authorization": f"Bearer {world.retailer.key}"})
        schema.config.seed = SEED
        schema = schema.exclude(path_regex="^/(healthz|readyz)$")
        fuzzer = GatewayFuzzer(checker, base_url, findings)
        fuzzer.stateless(schema, world, sizes.examples)
        stateless = findings.requests
        # The partner's own key would be revoked by a link from its key list, and every request after refused.
        links = fuzzer.stateful(schema.exclude(operation_id="identity_RevokeApiKey"), sizes.examples)
        return len(fuzzer.operations), stateless, findings.requests - stateless, links

    operations, stateless, stateful, links = await asyncio.to_thread(run)
    figures |= {
        "gateway operations": operations,
        "gateway links inferred": links,
        "gateway requests (stateless)": stateless,
        "gateway requests (stateful)": stateful,
        **{f"gateway {k}": findings.statuses[k] for k in sorted({"2xx", "4xx", "5xx", *findings.statuses})},
        "gateway 4xx by status": " ".join(f"{c}:{n}" for c, n in sorted(findings.codes.items()) if 400 <= c < 500),
        "gateway 4xx checked for partial writes": findings.refusals_checked,
        "gateway 2xx seen writing": findings.writes_seen,
    }
    return findings


# --- gRPC ----------------------------------------------------------------------------------------


def principals(world: World, signer: PrincipalSigner) -> Iterator[tuple[str, Callable[[], str]]]:
    """Who calls: partners with their keys' scopes, a retailer acting for its customer, and now and
    then a service (the only caller some internal RPCs accept)."""
    partner_scopes = frozenset({"reviews:write"})
    for name, principal in (
        ("retailer", Principal(partner_id=world.retailer.partner_id, scopes=partner_scopes)),
        ("retailer for customer", Principal(world.retailer.partner_id, world.customer_id, partner_scopes)),
        ("maker", Principal(partner_id=world.maker.partner_id, scopes=partner_scopes)),
        ("operator", Principal(partner_id=world.operator.partner_id, scopes=frozenset(operator.OPERATOR_SCOPES))),
        ("service", Principal(service="reliability-fuzzer")),
    ):
        yield name, functools.partial(signer.sign, principal)


async def fuzz_the_services(
    stack: Stack, world: World, checker: Checker, sizes: Sizes, figures: dict[str, object]
) -> Findings:
    findings = Findings()
    signer = PrincipalSigner(ServiceSettings().principal_signing_key.get_secret_value())
    callers = list(principals(world, signer))
    # Mostly partners; the service principal one time in nine.
    caller = st.sampled_from([*[c for c in callers if c[0] != "service" for _ in range(2)], callers[-1]])
    channels = {name: grpc.aio.insecure_channel(stack.address(name)) for name in SERVICES}
    builder = MessageStrategies(world.named)
    rpcs = 0
    try:

        async def invoke(name: str, method: MethodDescriptor, request: Message, token: str) -> grpc.StatusCode:
            call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = channels[name].unary_unary(
                f"/{method.containing_service.full_name}/{method.name}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=GetMessageClass(method.output_type).FromString,
            )
            try:
                await call(request, metadata=(("authorization", f"Bearer {token}"),), timeout=CALL_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        def fuzz(name: str, method: MethodDescriptor) -> None:
            @hypothesis_settings(sizes.examples)
            @given(caller, builder.messages(method.input_type))
            def send(who: tuple[str, Callable[[], str]], request: Message) -> None:
                code, changed = checker.around([name], lambda: checker.wait(invoke(name, method, request, who[1]())))
                findings.requests += 1
                findings.statuses[code.name] += 1
                shown = f"{name}.{method.name} as {who[0]}: {text_format.MessageToString(request, as_one_line=True)}"
                if code in FAILED_ON_THE_SERVER:
                    findings.failures.append(f"{code.name} from {shown[:2000]}")
                if code == grpc.StatusCode.OK:
                    findings.writes_seen += bool(changed)
                if code not in NOT_A_REFUSAL:
                    findings.refusals_checked += 1
                    if changed:
                        findings.partial_writes.append(f"{code.name} but wrote {changed} from {shown[:2000]}")

            send()

        for name, service in SERVICES.items():
            for method in service.methods:
                rpcs += 1
                await asyncio.to_thread(fuzz, name, method)
    finally:
        for channel in channels.values():
            await channel.close()
    figures |= {
        "rpcs": rpcs,
        "rpc calls": findings.requests,
        **{f"rpc {k}": v for k, v in sorted(findings.statuses.items())},
        "rpc refusals checked for partial writes": findings.refusals_checked,
        "rpc OKs seen writing": findings.writes_seen,
    }
    return findings


async def test_generated_bad_input_fails_nothing_on_the_server_and_leaves_nothing_written(
    stack: Stack, sizes: Sizes, figures: dict[str, object]
) -> None:
    dbs = Databases(
        {c.name: c.env["COLLABNET_DATABASE_URL"] for c in stack.components},
        stack.nats.url,
    )
    try:
        world = await make_world(stack, dbs)
        checker = Checker(asyncio.get_running_loop(), dbs, await dbs.settle())
        started = asyncio.get_running_loop().time()
        gateway = await fuzz_the_gateway(stack, world, checker, sizes, figures)
        figures["gateway seconds"] = asyncio.get_running_loop().time() - started
        started = asyncio.get_running_loop().time()
        services = await fuzz_the_services(stack, world, checker, sizes, figures)
        figures["rpc seconds"] = asyncio.get_running_loop().time() - started
    finally:
        await dbs.close()
    figures |= {
        "gateway failures (5xx, misnamed 429)": len(gateway.failures),
        "rpc failures (INTERNAL, UNKNOWN, ...)": len(services.failures),
        "partial writes after a refusal": len(gateway.partial_writes) + len(services.partial_writes),
    }
    problems = gateway.failures + services.failures + gateway.partial_writes + services.partial_writes
    assert not problems, "\n\n".join(problems)
    # Every request carried the partner's valid key: a 401 means the run lost it (revoked it) and
    # tested nothing past authentication from then on.
    assert gateway.codes[401] == 0
    # The fingerprints see writes (those of accepted requests): "nothing written" is not for want of looking.
    assert gateway.writes_seen > 0 and services.writes_seen > 0
