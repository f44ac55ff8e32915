"""Every process exports the contract's metrics on its Prometheus scrape endpoint: nats-server, the
five services and the gateway as separate processes (the runner ``make run`` uses), each with
``COLLABNET_METRICS_PORT`` set, driven through a short part of the closed loop, then scraped.

``METRICS`` is the one list of the metric names dashboards, alert rules and runbooks may use, as
Prometheus scrapes them (histograms as their ``_bucket``, ``_count`` and ``_sum`` series).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import httpx
import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from collabnet_cli import operator
from collabnet_cli.gateway import Caller, Gateway, WebhookEndpoint
from collabnet_cli.stack import Stack
from collabnet_cli.story import ClosedLoop
from collabnet_kit.nats_server import free_port
from collabnet_kit.testing import eventually


def _histogram(name: str, description: str) -> dict[str, str]:
    return {f"{name}_{series}": f"{description} ({series})" for series in ("bucket", "count", "sum")}


METRICS: dict[str, str] = {
    **_histogram(
        "rpc_server_call_duration_seconds",
        "gRPC calls a service handled, by rpc_system, rpc_service, rpc_method, rpc_response_status_code",
    ),
    **_histogram(
        "http_server_request_duration_seconds",
        "the gateway's HTTP requests, by http_request_method, http_route, http_response_status_code",
    ),
    "collabnet_outbox_backlog": "events recorded in a service's outbox and not yet published",
    "collabnet_outbox_oldest_age_seconds": "age of the oldest unpublished outbox event; 0 when none",
    **_histogram(
        "collabnet_relay_publish_duration_seconds",
        "the outbox relay's publish-to-ack time per event, by messaging_destination_name",
    ),
    "collabnet_consumer_lag": "messages a durable consumer has not yet handled, by durable",
    "collabnet_consumer_redeliveries_total": "deliveries of an already delivered message, by durable",
    "collabnet_deadletter_events_total": "events sent to the dead-letter subject, by durable and subject",
    **_histogram(
        "collabnet_event_latency_seconds",
        "from an event's recording in the outbox to its first successful handling, by durable, "
        "messaging_destination_name",
    ),
}
"""The contract: every metric name as scraped, and what it measures."""

SERVICES = ("identity", "supplychain", "reviews", "community", "improvement")
SERVICE_NAMES = {
    "identity": "collabnet.identity.v1.IdentityService",
    "supplychain": "collabnet.supplychain.v1.SupplyChainService",
    "reviews": "collabnet.reviews.v1.ReviewsService",
    "community": "collabnet.community.v1.CommunityService",
    "improvement": "collabnet.improvement.v1.ImprovementService",
}
CONSUMERS = ("supplychain", "reviews", "community", "improvement", "gateway")


def scraped_names(text: str) -> set[str]:
    """The names of the series in Prometheus text: what a query can select (``..._bucket``, ``..._total``)."""
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


CHART = Path(__file__).parents[2] / "deploy" / "helm" / "collabnet"
EXTERNAL = ("kube_",)
"""Prefixes of metrics the chart's queries may use that collabnet does not export (kube-state-metrics)."""

_PROMQL_NOT_A_METRIC = re.compile(
    r'"(?:[^"\\]|\\.)*"|'  # strings (label values, label_replace's arguments)
    r"'(?:[^'\\]|\\.)*'|"
    r"\{[^}]*\}|"  # label matchers
    r"\[[^\]]*\]|"  # ranges and subqueries
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)|"  # label lists
    r"\boffset\s+\S+|"
    r"\b\d+(?:\.\d+)?(?:e[+-]?\d+)?\b"  # numbers
)
_PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers, ranges,
    label lists and numbers are gone, other than functions (a name followed by ``(``) and keywords."""
    rest = _PROMQL_NOT_A_METRIC.sub(" ", expr)
    names = re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*(?!\s*\(|[A-Za-z0-9_:])", rest)
    return {m.group() for m in names if m.group().lower() not in _PROMQL_KEYWORDS}


def test_promql_metric_names() -> None:
    expr = (
        'sum by (job, le) (rate(a_bucket{job=~"x|y", code!="5"}[5m] offset 1h)) / on (job) group_left (pod) b '
        'or vector(0) > bool 1e3 unless label_replace(c_total, "job", "$1", "deployment", "(.*)")'
    )
    assert promql_metric_names(expr) == {"a_bucket", "b", "c_total"}


def _expressions(node: Any) -> Iterator[str]:
    """Every query in a Grafana dashboard: panels' ``expr`` and template variables' ``label_values``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            elif key == "definition" and isinstance(value, str):
                yield from re.findall(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", value)
            else:
                yield from _expressions(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions(item)


def chart_queries() -> dict[str, set[str]]:
    """For each alert rule and dashboard the chart renders with its monitoring on: the metrics it uses."""
    values = {"monitoring": {"prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}}
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render(values, name="collabnet", namespace="collabnet")
    used: dict[str, set[str]] = {}
    for path, manifest in manifests.items():
        if path.endswith(".txt"):  # NOTES.txt
            continue
        for document in yaml.safe_load_all(manifest):
            if not document:
                continue
            if document["kind"] == "PrometheusRule":
                for group in document["spec"]["groups"]:
                    for rule in group["rules"]:
                        where = f"alert {rule.get('alert') or rule.get('record')}"
                        used.setdefault(where, set()).update(promql_metric_names(rule["expr"]))
            elif document["kind"] == "ConfigMap":
                for key, body in document.get("data", {}).items():
                    if key.endswith(".json"):
                        dashboard = json.loads(body)
                        where = f"dashboard {dashboard.get('title', key)}"
                        for expr in _expressions(dashboard):
                            used.setdefault(where, set()).update(promql_metric_names(expr))
    return used


def test_the_chart_has_queries_to_check() -> None:
    used = chart_queries()
    assert any(where.startswith("alert") for where in used) and any(where.startswith("dashboard") for where in used)
    assert all(names for names in used.values()), used


def samples(text: str, name: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples if s.name == name]


def labels(text: str, name: str, *keys: str) -> set[tuple[str, ...]]:
    """The distinct values of the labels ``keys`` over the series ``name``."""
    return {tuple(s.labels.get(k, "") for k in keys) for s in samples(text, name)}


@pytest.fixture
def component_env() -> Callable[[], dict[str, str]]:
    """Each process with a scrape endpoint."""
    return lambda: {"COLLABNET_METRICS_PORT": str(free_port())}


def metrics_url(stack: Stack, name: str) -> str:
    return f"http://127.0.0.1:{stack.component(name).env['COLLABNET_METRICS_PORT']}/metrics"


async def scrape(stack: Stack, name: str) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(metrics_url(stack, name))
    response.raise_for_status()
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def until_labelled(stack: Stack, name: str, series: str, **wanted: str) -> None:
    """Wait until the process ``name`` exports ``series`` with the labels ``wanted``."""

    async def exported() -> bool:
        return tuple(wanted.values()) in labels(await scrape(stack, name), series, *wanted)

    await eventually(exported, timeout=20)


async def test_every_process_exports_the_contract_metrics(stack: Stack) -> None:
    key = await operator.ensure_operator(stack.state_dir, stack.address("identity"))
    with WebhookEndpoint() as webhooks:
        async with Gateway(f"http://{stack.address('gateway')}") as gateway:
            loop = ClosedLoop(gateway, Caller(key.partner_id, key.secret), webhooks)
            # Partners join, M registers P (community and reviews hear of it), R's customers join
            # M's community, and B buys P and reviews it (improvement hears of the review).
            await loop.join()
            await loop.catalog()
            await loop.customers()
            await loop.earlier_buyer()
            await gateway.get(loop.retailer, "/v1/cases", product_id=loop.ids["P"])  # a call to improvement
            product = loop.ids["P"]
            refused = await gateway.http.get(f"/v1/products/{product}")  # no key
            assert refused.status_code == 401
            unknown = await gateway.http.get("/v1/no/such/route", headers=loop.retailer.headers)
            assert unknown.status_code == 404

    # Each service: its RPCs by method and status, and its outbox.
    for name in SERVICES:
        text = await scrape(stack, name)
        calls = labels(text, "rpc_server_call_duration_seconds_count", "rpc_system", "rpc_service")
        assert calls == {("grpc", SERVICE_NAMES[name])}, (name, calls)
        assert labels(text, "rpc_server_call_duration_seconds_count", "rpc_response_status_code") >= {("OK",)}
        assert "grpc.health.v1.Health" not in text
        for series in ("collabnet_outbox_backlog", "collabnet_outbox_oldest_age_seconds"):
            assert samples(text, series), (name, series)
    # The gateway's HTTP requests, by route template (never the raw path) and status.
    text = await scrape(stack, "gateway")
    requests = labels(
        text,
        "http_server_request_duration_seconds_count",
        "http_request_method",
        "http_route",
        "http_response_status_code",
    )
    assert ("POST", "/v1/partners", "201") in requests or ("POST", "/v1/partners", "200") in requests, requests
    assert ("GET", "/v1/products/{product_id}", "401") in requests, requests
    assert ("GET", "", "404") in requests, requests  # unmatched: no route label
    assert not any(product in route or route.startswith("/v1/no") for _, route, _ in requests), requests
    assert not {route for _, route, _ in requests} & {"/healthz", "/readyz"}  # probes (the runner's) are not
    # Measured once, by the boundary: FastAPI's own request metrics are off.
    scopes = {s.labels["otel_scope_name"] for s in samples(text, "http_server_request_duration_seconds_count")}
    assert scopes == {"collabnet_gateway"}
    assert "http_server_active_requests" not in scraped_names(text)
    assert "rpc_server_call_duration_seconds_count" not in scraped_names(text)  # the gateway serves no gRPC

    # Publishers: each event's publish to JetStream, by subject.
    published = {
        "identity": "collabnet.identity.v1.RelationshipEstablished",
        "supplychain": "collabnet.supplychain.v1.ProductRegistered",
        "reviews": "collabnet.reviews.v1.ReviewPublished",
    }
    for name, subject in published.items():
        await until_labelled(
            stack, name, "collabnet_relay_publish_duration_seconds_count", messaging_destination_name=subject
        )

    # Consumers: lag and the counters by durable; latency of the events they handled.
    for name in CONSUMERS:
        text = await scrape(stack, name)
        for series in ("collabnet_consumer_lag", "collabnet_consumer_redeliveries_total"):
            assert labels(text, series, "durable") == {(name,)}, (name, series)
        assert "collabnet_deadletter_events_total" in scraped_names(text), name
    handled = {
        "community": "collabnet.supplychain.v1.ProductRegistered",
        "reviews": "collabnet.supplychain.v1.ProductRegistered",
        "improvement": "collabnet.reviews.v1.ReviewPublished",
    }
    for name, subject in handled.items():
        await until_labelled(
            stack, name, "collabnet_event_latency_seconds_count", durable=name, messaging_destination_name=subject
        )

    # Together, the processes export every name of the contract.
    everything = set().union(*[scraped_names(await scrape(stack, c.name)) for c in stack.components])
    assert sorted(set(METRICS) - everything) == []
    # Every metric the chart's alert rules and dashboard query is one they export (or kube-state-metrics').
    missing = {
        where: sorted(name for name in names - everything if not name.startswith(EXTERNAL))
        for where, names in chart_queries().items()
    }
    assert {where: names for where, names in missing.items() if names} == {}
