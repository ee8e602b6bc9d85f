"""Prometheus metrics of every fairstream process, and the ``/metrics`` route serving them.

One registry per process (prometheus-client's default). Labels stay bounded: regions,
reasons, source kinds, buckets and route templates, never a package name or a URL path.
The Grafana dashboard in ``infra/grafana/`` reads these names; a test scrapes running
processes and checks every name it uses is there.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

EVENTS = Counter(
    "fairstream_events",
    "Release-stream records a region's workers handled, by outcome "
    "(applied, refused, skipped, abandoned).",
    ["region", "outcome"],
)
REJECTED = Counter(
    "fairstream_events_rejected",
    "Records refused and recorded on the rejected topic, by reason.",
    ["region", "reason"],
)
REJECTIONS_DEAD_LETTERED = Counter(
    "fairstream_rejections_dead_lettered",
    "Rejections the broker still refused after bounded retries, kept in the worker's "
    "dead-letter file (and re-sent from it) so the partition could go on.",
    ["region"],
)
LAG_EVENTS = Gauge(
    "fairstream_lag_events",
    "Events in the log the region has not applied (log end minus committed offset).",
    ["region"],
)
LAG_SECONDS = Gauge(
    "fairstream_lag_seconds",
    "Age of the oldest event the region has not applied (0 when in sync).",
    ["region"],
)
ARTIFACTS_PENDING = Gauge(
    "fairstream_artifacts_pending",
    "Zips applied in metadata but not yet fetched (no source delivered them yet).",
    ["region"],
)
FETCH_SECONDS = Histogram(
    "fairstream_fetch_seconds",
    "Time to download and check one zip, by source (origin or replica).",
    ["region", "source"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
FETCH_BYTES = Counter(
    "fairstream_fetch_bytes",
    "Bytes of zips downloaded and checked, by source (origin or replica).",
    ["region", "source"],
)
STORE_WRITES = Counter(
    "fairstream_store_writes",
    "Objects written to the object store, by bucket and kind (the key's first segment: "
    "artifacts, p2, state, ...).",
    ["bucket", "kind"],
)
HTTP_REQUESTS = Counter(
    "fairstream_http_requests",
    "HTTP requests answered, by service, route template and status.",
    ["service", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "fairstream_http_request_seconds",
    "Time to answer an HTTP request, by service and route template.",
    ["service", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
)
NODE_LAG_EVENTS = Gauge(
    "fairstream_node_lag_events",
    "A node's events behind, from its last verified heartbeat (the directory's view).",
    ["region", "node"],
)
NODE_HEARTBEAT_AGE = Gauge(
    "fairstream_node_heartbeat_age_seconds",
    "Seconds since a node's last verified heartbeat (the directory's view).",
    ["region", "node"],
)
NODES = Gauge(
    "fairstream_directory_nodes",
    "Nodes the directory knows, by admission (admitted, pending, refused, dropped).",
    ["admission"],
)
ROUTED = Counter(
    "fairstream_directory_routed",
    "Downloads the directory sent to a region (or to the origin), by client region.",
    ["client_region", "target"],
)
PUBLISHED = Counter(
    "fairstream_published",
    "Events the publishing service produced and the broker acknowledged, by kind.",
    ["kind"],
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def record_store_write(bucket: str, key: str) -> None:
    """Count one object written under ``key`` (labelled by the key's first segment)."""
    STORE_WRITES.labels(bucket, key.split("/", 1)[0] if "/" in key else "root").inc()


def route_of(request: web.Request) -> str:
    """The template of the route a request matched (bounded), or ``unmatched``."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def instrument(app: web.Application, service: str) -> web.Application:
    """Count ``app``'s requests by route and status, and serve ``GET /metrics``.

    Call before the app starts (middlewares freeze with it). Returns ``app``.
    """

    @web.middleware
    async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            route = route_of(request)
            HTTP_REQUESTS.labels(service, route, str(status)).inc()
            HTTP_SECONDS.labels(service, route).observe(time.perf_counter() - started)

    app.middlewares.append(measure)
    app.router.add_get("/metrics", metrics)
    return app


async def metrics(request: web.Request) -> web.Response:
    """The process's metrics in Prometheus' text format."""
    response = web.Response(body=generate_latest())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response
