"""Prometheus metrics of fairstream's processes, and the ``/metrics`` route serving them.

Each kind of process (its ``service``: ``node``, ``frontend``, ``directory``,
``publishing``, ``meta-directory``, ``origin``) serves a registry of its own that holds
only the families it uses (``FAMILIES``), beside what every process has:
``fairstream_build_info``, the HTTP families and prometheus-client's process and Python
collectors. The metrics are module-level objects registered in no registry until
``registry_for`` puts them in one, so a directory never shows a node's families (it
runs a release stream of its own, whose counts it does not export). Labels stay
bounded: regions, reasons, source kinds, buckets and route templates, never a package
name or a URL path. The Grafana dashboard in ``infra/grafana/`` and the alert rules in
``infra/prometheus/`` read these names; tests check every name they use is exported.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Final

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase

from schemas.errors import ConfigurationError

EVENTS = Counter(
    "fairstream_events",
    "Release-stream records a region's workers handled, by outcome "
    "(applied, refused, skipped, abandoned).",
    ["region", "outcome"],
    registry=None,
)
REJECTED = Counter(
    "fairstream_events_rejected",
    "Records refused and recorded on the rejected topic, by reason.",
    ["region", "reason"],
    registry=None,
)
REJECTIONS_DEAD_LETTERED = Counter(
    "fairstream_rejections_dead_lettered",
    "Rejections the broker still refused after bounded retries, kept in the worker's "
    "dead-letter file (and re-sent from it) so the partition could go on.",
    ["region"],
    registry=None,
)
LAG_EVENTS = Gauge(
    "fairstream_lag_events",
    "Events in the log the region has not applied (log end minus committed offset).",
    ["region"],
    registry=None,
)
LAG_SECONDS = Gauge(
    "fairstream_lag_seconds",
    "Age of the oldest event the region has not applied (0 when in sync).",
    ["region"],
    registry=None,
)
ARTIFACTS_PENDING = Gauge(
    "fairstream_artifacts_pending",
    "Zips applied in metadata but not yet fetched (no source delivered them yet).",
    ["region"],
    registry=None,
)
FETCH_SECONDS = Histogram(
    "fairstream_fetch_seconds",
    "Time to download and check one zip, by source (origin or replica).",
    ["region", "source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=None,
)
FETCH_BYTES = Counter(
    "fairstream_fetch_bytes",
    "Bytes of zips downloaded and checked, by source (origin or replica).",
    ["region", "source"],
    registry=None,
)
STORE_WRITES = Counter(
    "fairstream_store_writes",
    "Objects written to the object store, by bucket and kind (the key's first segment: "
    "artifacts, p2, state, ...).",
    ["bucket", "kind"],
    registry=None,
)
HTTP_REQUESTS = Counter(
    "fairstream_http_requests",
    "HTTP requests answered, by service, route template and status code.",
    ["service", "route", "code"],
    registry=None,
)
HTTP_SECONDS = Histogram(
    "fairstream_http_request_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
    registry=None,
)
NODE_LAG_EVENTS = Gauge(
    "fairstream_node_lag_events",
    "A node's events behind, from its last verified heartbeat (the directory's view).",
    ["region", "node"],
    registry=None,
)
NODE_HEARTBEAT_AGE = Gauge(
    "fairstream_node_heartbeat_age_seconds",
    "Seconds since a node's last verified heartbeat (the directory's view).",
    ["region", "node"],
    registry=None,
)
NODES = Gauge(
    "fairstream_directory_nodes",
    "Nodes the directory knows, by admission (admitted, pending, refused, dropped).",
    ["admission"],
    registry=None,
)
ROUTED = Counter(
    "fairstream_directory_routed",
    "Downloads the directory sent to a region (or to the origin), by client region.",
    ["client_region", "target"],
    registry=None,
)
PUBLISHED = Counter(
    "fairstream_published",
    "Events the publishing service produced and the broker acknowledged, by kind.",
    ["kind"],
    registry=None,
)
TRUST_ROOT_EXPIRY = Gauge(
    "fairstream_trust_root_expiry_timestamp_seconds",
    "When the trust root in force expires, as a Unix time (a node applies nothing after it "
    "until a newer root is on the trust topic; the publishing service publishes nothing).",
    registry=None,
)
STORE_BYTES = Gauge(
    "fairstream_store_bytes",
    "Bytes of zips in the region's bucket, as its heartbeats count them (every 5 minutes).",
    ["region"],
    registry=None,
)
STORE_QUOTA_BYTES = Gauge(
    "fairstream_store_quota_bytes",
    "The region's quota on the bytes of zips it keeps (--quota); cold zips are evicted "
    "beyond it. Absent when the region has no quota.",
    ["region"],
    registry=None,
)
NODE_STATE = Gauge(
    "fairstream_node_state",
    "The state the node's last heartbeat carried: 1 for it, 0 for the others "
    "(in-sync, catching-up, degraded).",
    ["region", "state"],
    registry=None,
)
NODE_HEALTHY = Gauge(
    "fairstream_node_healthy",
    "1 when the worker's /health answers 200 (its loop is not stuck, it holds no "
    "unrecorded rejections, its trust root has not expired), 0 when it answers 503.",
    ["region"],
    registry=None,
)
NODE_READY = Gauge(
    "fairstream_node_ready",
    "1 when the worker's /ready answers 200 (clients may be sent to it), 0 when it answers 503.",
    ["region"],
    registry=None,
)
DIST_PROXY_ABORTED = Counter(
    "fairstream_dist_proxy_aborted",
    "Zip downloads sent through the node (--dist proxy) broken off before their last bytes, "
    "by reason: digest-mismatch (the stored bytes are not the signed ones), store-error "
    "(the store broke off).",
    ["region", "reason"],
    registry=None,
)

#: The families each kind of process exports, by its ``service`` label, beside those every
#: process exports (build info, HTTP, process and Python figures).
FAMILIES: Final[Mapping[str, tuple[MetricWrapperBase, ...]]] = {
    # A worker (``node run``): its release stream, fetches, store and sync state.
    "node": (
        EVENTS,
        REJECTED,
        REJECTIONS_DEAD_LETTERED,
        LAG_EVENTS,
        LAG_SECONDS,
        ARTIFACTS_PENDING,
        FETCH_SECONDS,
        FETCH_BYTES,
        STORE_WRITES,
        STORE_BYTES,
        STORE_QUOTA_BYTES,
        NODE_STATE,
        NODE_HEALTHY,
        NODE_READY,
        TRUST_ROOT_EXPIRY,
        DIST_PROXY_ABORTED,
    ),
    # A frontend (``node serve``): it applies nothing, but heartbeats the region's state.
    "frontend": (
        LAG_EVENTS,
        LAG_SECONDS,
        ARTIFACTS_PENDING,
        STORE_BYTES,
        STORE_QUOTA_BYTES,
        NODE_STATE,
        TRUST_ROOT_EXPIRY,
        DIST_PROXY_ABORTED,
    ),
    "directory": (NODES, NODE_LAG_EVENTS, NODE_HEARTBEAT_AGE, ROUTED, TRUST_ROOT_EXPIRY),
    "publishing": (PUBLISHED, TRUST_ROOT_EXPIRY),
    "meta-directory": (),
    "origin": (),
}
#: What every process exports, whatever it is.
EVERY_PROCESS: Final[tuple[MetricWrapperBase, ...]] = (HTTP_REQUESTS, HTTP_SECONDS)


def _installed_version() -> str:
    try:
        return version("fairstream")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def registry_for(service: str) -> CollectorRegistry:
    """A new registry holding what a ``service`` process exports: ``fairstream_build_info``
    (its version and service), the families of ``EVERY_PROCESS`` and of ``FAMILIES[service]``,
    and prometheus-client's process and Python collectors.

    Raises ``ConfigurationError`` for a service ``FAMILIES`` does not name.
    """
    if service not in FAMILIES:
        raise ConfigurationError(
            f"no metrics are defined for a {service!r} process; "
            f"known services: {', '.join(sorted(FAMILIES))}"
        )
    registry = CollectorRegistry()
    build = Info(
        "fairstream_build",
        "The fairstream release this process runs, and which kind of process it is (always 1).",
        registry=registry,
    )
    build.info({"version": _installed_version(), "service": service})
    for collector in (*EVERY_PROCESS, *FAMILIES[service]):
        registry.register(collector)
    for standard in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(standard)
    return registry


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def record_store_write(bucket: str, key: str) -> None:
    """Count one object written under ``key`` (labelled by the key's first segment)."""
    STORE_WRITES.labels(bucket, key.split("/", 1)[0] if "/" in key else "root").inc()


def route_of(request: web.Request) -> str:
    """The template of the route a request matched (bounded), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def instrument(app: web.Application, service: str) -> web.Application:
    """Count ``app``'s requests by route and status code, and serve ``GET /metrics``: the
    families a ``service`` process exports (``registry_for``).

    Call before the app starts (middlewares freeze with it). Returns ``app``. Raises
    ``ConfigurationError`` for an unknown service.
    """
    registry = registry_for(service)

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        code = 500
        try:
            response = await handler(request)
            code = response.status
            return response
        except web.HTTPException as exc:
            code = exc.status
            raise
        finally:
            route = route_of(request)
            HTTP_REQUESTS.labels(service, route, str(code)).inc()
            HTTP_SECONDS.labels(service, route).observe(time.perf_counter() - started)

    async def metrics(request: web.Request) -> web.Response:
        """The process's metrics in Prometheus' text format."""
        response = web.Response(body=generate_latest(registry))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.middlewares.append(measure)
    app.router.add_get("/metrics", metrics)
    return app
