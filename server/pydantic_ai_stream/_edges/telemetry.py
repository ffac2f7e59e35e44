"""`Telemetry`: the OpenTelemetry traces and metrics of a server or worker process (the `otel` extra).

It implements `Metrics` (`_core/metrics.py`), all that the parts below the edges see of it. Off unless a
process builds one: its parts then report to `NO_METRICS`, a call that does nothing per write batch, run
or listener (none per event), and it loads neither the SDK's tracing nor the exporters. A `Telemetry` owns
its providers, its exporters and its Prometheus endpoint: they are started by `async with Telemetry(...)`
(or `start()`) and stopped on exit (or `aclose()`); nothing is set globally.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from .._core.metrics import RunReport

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from opentelemetry.metrics import CallbackOptions, Observation
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from .._core.entry import Entry

__all__ = ["LATENCY_BUCKETS_MS", "METER_NAME", "Telemetry"]

logger = logging.getLogger(__name__)

METER_NAME = "pydantic_ai_stream"
"""The instrumentation scope of this package's spans and metrics (and the prefix of the metric names)."""
LATENCY_BUCKETS_MS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Histogram bucket bounds of the delivery and cancel latencies, in milliseconds."""
_QUEUE_READ_TIMEOUT = 2.0
"""Seconds a scrape waits for the queue's depth from Redis before it leaves the gauge out."""


@dataclass(eq=False, kw_only=True)
class Telemetry:
    """Traces (`run <agent>` spans, gRPC server spans, pydantic-ai's spans) and metrics of one process.

    Spans and metrics go over OTLP to `otlp_endpoint` (gRPC, e.g. `http://localhost:4317`) when it is set,
    metrics to a Prometheus endpoint on `metrics_port` when it is set (`0`: any free port, see
    `metrics_address`), and to the extra `span_exporters` and `metric_readers` (e.g. the SDK's in-memory
    ones) always.
    """

    service_name: str = "pydantic-ai-stream"
    otlp_endpoint: str | None = None
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    span_exporters: Sequence[SpanExporter] = ()
    metric_readers: Sequence[MetricReader] = ()
    include_content: bool = True
    """Whether pydantic-ai's spans carry prompts, completions and tool arguments."""

    tracer_provider: TracerProvider = field(init=False)
    meter_provider: MeterProvider = field(init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _queue_depth: Callable[[], Any] | None = field(default=None, init=False)
    _http: tuple[WSGIServer, threading.Thread] | None = field(default=None, init=False)
    _registry: Any = field(default=None, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        try:
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        except ImportError as e:
            raise ImportError(
                f"telemetry needs the otel extra: pip install 'pydantic-ai-stream[otel]>=0.2' ({e})"
            ) from e

        resource = Resource.create({"service.name": self.service_name})
        self.tracer_provider = TracerProvider(resource=resource)
        for exporter in self.span_exporters:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        readers = list(self.metric_readers)
        if self.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=self.otlp_endpoint)))
            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=self.otlp_endpoint)))
        if self.metrics_port is not None:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            self._registry = CollectorRegistry()  # this object's own: two in one process do not collide
            # No `otel_scope_*` labels: the metric names say whose they are.
            readers.append(PrometheusMetricReader(registry=self._registry, scope_info_enabled=False))
        self.meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        self._instruments()

    def _instruments(self) -> None:
        meter = self.meter_provider.get_meter(METER_NAME)
        name = METER_NAME
        self.runs_started = meter.create_counter(f"{name}.runs.started", "{run}", "Runs a worker began executing")
        self.runs_finished = meter.create_counter(f"{name}.runs.finished", "{run}", "Runs that ended with `end`")
        self.runs_failed = meter.create_counter(f"{name}.runs.failed", "{run}", "Runs that crashed or lost their lease")
        self.runs_cancelled = meter.create_counter(f"{name}.runs.cancelled", "{run}", "Runs ended by a cancel")
        self.runs_live = meter.create_up_down_counter(f"{name}.runs.live", "{run}", "Runs executing in this process")
        self.events_written = meter.create_counter(
            f"{name}.events.written", "{event}", "Events runs streamed (not `begin`, `end`)"
        )
        self.redis_errors = meter.create_counter(f"{name}.redis.errors", "{error}", "Redis calls that failed")
        self.listen_streams = meter.create_up_down_counter(
            f"{name}.listen.streams", "{stream}", "Listeners reading a session's events now"
        )
        self.delivery_latency = meter.create_histogram(
            f"{name}.delivery.latency",
            "ms",
            "From an entry's write (its stream id) to its hand-over to a listener",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        self.cancel_latency = meter.create_histogram(
            f"{name}.cancel.latency",
            "ms",
            "From a cancel reaching the run's worker to the run's end",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS_MS,
        )
        meter.create_observable_gauge(
            f"{name}.runs.queued", [self._observe_queued], "{run}", "Runs in the queue no worker has claimed yet"
        )
        self.tracer = self.tracer_provider.get_tracer(METER_NAME)

    async def __aenter__(self) -> Telemetry:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Serve the Prometheus endpoint (if `metrics_port` is set); the queue's depth is read on this loop."""
        self._loop = asyncio.get_running_loop()
        if self.metrics_port is not None and self._http is None:
            from prometheus_client import start_http_server

            self._http = start_http_server(self.metrics_port, addr=self.metrics_host, registry=self._registry)
            logger.info("Prometheus metrics on http://%s:%d/metrics", *self.metrics_address)

    async def aclose(self) -> None:
        """Stop the Prometheus endpoint, export what is left and shut the providers down."""
        if self._closed:
            return
        self._closed = True
        if self._http is not None:
            server, thread = self._http
            await asyncio.to_thread(server.shutdown)
            server.server_close()
            thread.join()
            self._http = None
        # Exporters may block on an unreachable collector: not on the loop.
        await asyncio.to_thread(self.tracer_provider.shutdown)
        await asyncio.to_thread(self.meter_provider.shutdown)

    @property
    def metrics_address(self) -> tuple[str, int]:
        """The host and port the Prometheus endpoint listens on (once started)."""
        if self._http is None:
            raise RuntimeError("no Prometheus endpoint: set metrics_port and start the Telemetry")
        host, port = self._http[0].server_address[:2]
        return str(host), int(port)

    def observe_queue(self, depth: Callable[[], Any] | None) -> None:
        """Report `depth()` (a coroutine: the runs no worker claimed yet) as the queued-runs gauge; `None`:
        stop (its Redis client is closing)."""
        self._queue_depth = depth

    def _observe_queued(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        loop, depth = self._loop, self._queue_depth
        if loop is None or depth is None or loop.is_closed():
            return []
        with contextlib.suppress(RuntimeError):
            if asyncio.get_running_loop() is loop:
                return []  # collected on the loop itself (e.g. at shutdown): it cannot wait for its own read
        future = asyncio.run_coroutine_threadsafe(depth(), loop)
        try:
            return [Observation(int(future.result(timeout=_QUEUE_READ_TIMEOUT)))]
        except Exception as e:
            future.cancel()
            self.redis_error("queue_depth")
            logger.warning("could not read the run queue's depth for the metrics (%s)", e)
            return []

    # The hooks of the parts that report.

    def written(self, count: int) -> None:
        """`count` entries were written to streams."""
        self.events_written.add(count)

    def redis_error(self, operation: str) -> None:
        """A Redis call of `operation` failed."""
        self.redis_errors.add(1, {"operation": operation})

    @contextlib.contextmanager
    def redis_errors_of(self, operation: str) -> Iterator[None]:
        """Count a Redis error raised inside as one of `operation`."""
        try:
            yield
        except (RedisError, OSError):
            self.redis_error(operation)
            raise

    async def listening(self, batches: AsyncIterator[list[Entry] | None]) -> AsyncIterator[list[Entry] | None]:
        """The batches of entries of one listener, counted as an open Listen stream while read; each entry's
        delivery latency is recorded (its stream id carries the millisecond Redis wrote it)."""
        streams, latency = self.listen_streams, self.delivery_latency
        streams.add(1)
        try:
            with self.redis_errors_of("listen"):
                async for batch in batches:
                    if batch is not None:
                        now_ms = time.time() * 1000
                        for entry in batch:
                            latency.record(max(0, now_ms - int(entry.id.partition("-")[0])))
                    yield batch
        finally:
            streams.add(-1)
            await batches.aclose()  # type: ignore[attr-defined]

    def traceparent(self, metadata: Iterable[tuple[str, Any]] | None) -> str | None:
        """The W3C `traceparent` a queued run continues: the current span's (the RPC's server span), else
        the caller's from `metadata`; `None` if neither is there."""
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        propagator = TraceContextTextMapPropagator()
        context = None
        if not trace.get_current_span().get_span_context().is_valid:
            carrier = {key: value for key, value in metadata or () if isinstance(value, str)}
            context = propagator.extract(carrier)
        out: dict[str, str] = {}
        propagator.inject(out, context=context)
        return out.get("traceparent")

    def grpc_interceptor(self) -> Any:
        """The OpenTelemetry gRPC instrumentation's server interceptor: a server span per RPC, but health
        checks (a load balancer's probes would fill the traces)."""
        from opentelemetry.instrumentation.grpc import aio_server_interceptor
        from opentelemetry.instrumentation.grpc.filters import health_check, negate

        return aio_server_interceptor(  # type: ignore[no-untyped-call]
            tracer_provider=self.tracer_provider,
            filter_=negate(health_check()),
        )

    @contextlib.contextmanager
    def run(self, report: RunReport) -> Iterator[dict[str, Any]]:
        """Observe a queued run's execution: the span `run <agent>` (a child of the caller's `traceparent`),
        the runs counters and gauge; yields the keyword arguments that nest pydantic-ai's own spans in it. The
        span's outcome is the one the block sets in `report`."""
        from opentelemetry.trace import SpanKind, Status, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        from pydantic_ai.capabilities import Instrumentation
        from pydantic_ai.models.instrumented import InstrumentationSettings

        traceparent = report.traceparent
        parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent}) if traceparent else None
        agent = {"agent": report.agent}
        attributes: dict[str, str | int] = {
            "pydantic_ai_stream.run_id": report.run_id,
            "pydantic_ai_stream.session_id": report.session_id,
            "pydantic_ai_stream.agent": report.agent,
            "pydantic_ai_stream.attempt": report.attempt,
        }
        settings = InstrumentationSettings(
            tracer_provider=self.tracer_provider,
            meter_provider=self.meter_provider,
            include_content=self.include_content,
        )
        span: Span
        with self.tracer.start_as_current_span(
            f"run {report.agent}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            self.runs_started.add(1, agent)
            self.runs_live.add(1, agent)
            try:
                yield {"capabilities": [Instrumentation(settings=settings)]}
            except Exception as e:
                if report.outcome in ("failed", "lost"):
                    span.record_exception(e)
                    span.set_status(Status(StatusCode.ERROR, str(e)))
                raise
            finally:
                self.runs_live.add(-1, agent)
                span.set_attribute("pydantic_ai_stream.outcome", report.outcome)
                self._ended(report, agent)

    def _ended(self, report: RunReport, agent: Mapping[str, str]) -> None:
        outcome = report.outcome
        if outcome == "finished":
            self.runs_finished.add(1, agent)
        elif outcome in ("failed", "lost"):
            self.runs_failed.add(1, agent)
        elif outcome == "cancelled":
            self.runs_cancelled.add(1, agent)
            if (cancelled_at := report.cancelled_at) is not None:
                self.cancel_latency.record((time.monotonic() - cancelled_at) * 1000, agent)
