"""Telemetry end to end: a real gRPC server, worker and Redis, seen through the SDK's in-memory exporters and
a real scrape of the Prometheus endpoint."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, FunctionModel
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from pydantic_ai_stream import Runtime, SessionHandle, Settings, Telemetry
from pydantic_ai_stream._core.names import END
from pydantic_ai_stream._core.submission import Submission
from pydantic_ai_stream._durable.job import Job
from pydantic_ai_stream.client import StreamClient, event_body
from pydantic_ai_stream.server import RunningServer, ServerSettings, Worker, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb
from support import GatedModel, scripted_model

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN_ID}-01"

weather = Agent(scripted_model(tokens=["It is ", "sunny."], tool="get_weather", tool_args='{"city": "Paris"}'))


@weather.tool_plain
def get_weather(city: str) -> str:
    return f"sunny in {city}"


stalling = Agent(scripted_model(tokens=["thinking ", "hard "], stall=True), name="stalling")


async def _crash(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
    yield "about to "
    raise RuntimeError("the model fell over")


crashing = Agent(FunctionModel(stream_function=_crash), name="crashing")

AGENTS = {name: f"{__name__}:{name}" for name in ("weather", "stalling", "crashing")}


def _config(redis_url: str) -> ServerSettings:
    return ServerSettings(redis_url=redis_url, port=0, agents=AGENTS, demo=False, shutdown_grace=0.5)


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def metrics() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
async def telemetry(spans: InMemorySpanExporter, metrics: InMemoryMetricReader) -> AsyncIterator[Telemetry]:
    async with Telemetry(span_exporters=[spans], metric_readers=[metrics]) as telemetry:
        yield telemetry


@pytest.fixture
async def server(redis_url: str, settings: Settings, telemetry: Telemetry) -> AsyncIterator[RunningServer]:
    async with running_server(_config(redis_url), settings=settings, telemetry=telemetry) as running:
        yield running


def _client(server: RunningServer) -> StreamClient:
    return StreamClient(f"127.0.0.1:{server.port}")


async def _until_end(client: StreamClient, session_id: str) -> list[pb.Event]:
    return [event async for event in client.listen(session_id)]


async def _points(reader: InMemoryMetricReader) -> dict[tuple[str, frozenset[tuple[str, Any]]], Any]:
    """Each metric point by (name, attributes): a sum's value, a histogram's count. Collected off the loop,
    which the queued-runs gauge reads Redis on."""
    data = await asyncio.to_thread(reader.get_metrics_data)
    points: dict[tuple[str, frozenset[tuple[str, Any]]], Any] = {}
    for resource in data.resource_metrics if data else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    points[metric.name, frozenset((point.attributes or {}).items())] = (
                        value if value is not None else point.count  # type: ignore[union-attr]
                    )
    return points


def _value(points: dict[tuple[str, frozenset[tuple[str, Any]]], Any], name: str, **attributes: Any) -> Any:
    return points.get((f"pydantic_ai_stream.{name}", frozenset(attributes.items())), 0)


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait until `check()` holds (a condition polled against a deadline)."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    named: dict[str, list[ReadableSpan]] = {}
    for span in spans.get_finished_spans():
        named.setdefault(span.name, []).append(span)
    return named


async def _span_ended(spans: InMemorySpanExporter, name: str, timeout: float = 10.0) -> None:
    """Wait until a span named `name` has ended: a server span ends once its handler has returned, which may be
    a moment after its client got the last response."""
    deadline = time.monotonic() + timeout
    while name not in _by_name(spans):
        assert time.monotonic() < deadline, f"no {name!r} span ended"
        await asyncio.sleep(0.01)  # polling the exporter: nothing tells when a span ends


def _ancestors(span: ReadableSpan, all_spans: list[ReadableSpan]) -> list[str]:
    by_id = {s.context.span_id: s for s in all_spans}
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        ancestor = by_id[parent.span_id]
        names.append(ancestor.name)
        parent = ancestor.parent
    return names


async def test_a_callers_trace_goes_through_run_queue_worker_to_the_model_and_tool_spans(
    server: RunningServer, spans: InMemorySpanExporter
) -> None:
    async with _client(server) as client:
        client.metadata = (*client.metadata, ("traceparent", TRACEPARENT))
        started = await client.run("weather", "t1", "weather in Paris?")
        events = await _until_end(client, "t1")
    assert events[-1].type == pb.EVENT_TYPE_END
    assert server.worker is not None
    await server.worker.join()  # the run span ends when the worker's run does

    finished = spans.get_finished_spans()
    named = _by_name(spans)
    [rpc] = named["/pydantic_ai_stream.v1.AgentStreamService/Run"]
    [run] = named["run weather"]
    assert {format(s.context.trace_id, "032x") for s in (rpc, run)} == {TRACE_ID}
    assert rpc.parent is not None
    assert format(rpc.parent.span_id, "016x") == CALLER_SPAN_ID
    assert run.parent is not None
    assert run.parent.span_id == rpc.context.span_id
    assert run.attributes is not None
    assert run.attributes["pydantic_ai_stream.run_id"] == started.run_id
    assert run.attributes["pydantic_ai_stream.session_id"] == "t1"
    assert run.attributes["pydantic_ai_stream.agent"] == "weather"
    assert run.attributes["pydantic_ai_stream.attempt"] == 1
    assert run.attributes["pydantic_ai_stream.outcome"] == "finished"
    # pydantic-ai's own spans nest inside the run span, in the same trace.
    [agent_run] = [s for s in finished if s.name.startswith("invoke_agent") or s.name == "agent run"]
    assert agent_run.parent is not None
    assert agent_run.parent.span_id == run.context.span_id
    models = [s for s in finished if s.name.startswith("chat ")]
    [tool] = [s for s in finished if s.name == "execute_tool get_weather"]
    assert len(models) == 2  # the tool call, then the answer
    for span in [*models, tool]:
        assert span.context.trace_id == run.context.trace_id
        assert "run weather" in _ancestors(span, finished)
    # The Listen RPC has its server span too.
    await _span_ended(spans, "/pydantic_ai_stream.v1.AgentStreamService/Listen")


async def test_a_run_without_a_caller_trace_starts_one(server: RunningServer, spans: InMemorySpanExporter) -> None:
    async with _client(server) as client:
        await client.run("weather", "t2", "weather?")
        await _until_end(client, "t2")
    assert server.worker is not None
    await server.worker.join()
    named = _by_name(spans)
    [rpc] = named["/pydantic_ai_stream.v1.AgentStreamService/Run"]
    [run] = named["run weather"]
    assert rpc.parent is None
    assert run.parent is not None
    assert run.parent.span_id == rpc.context.span_id


async def test_metrics_count_finished_failed_and_cancelled_runs(
    server: RunningServer, metrics: InMemoryMetricReader, spans: InMemorySpanExporter
) -> None:
    assert server.worker is not None
    async with _client(server) as client:
        await client.run("weather", "m1", "weather?")
        await _until_end(client, "m1")
        await client.run("crashing", "m2", "go")
        crashed = await _until_end(client, "m2")
        await client.run("stalling", "m3", "think")
        listen = client.listen("m3")
        async for event in listen:
            if event.content_delta == "hard ":
                break
        assert await client.cancel("m3")
        cancelled = [event async for event in listen]
    await server.worker.join()
    assert any(e.type == pb.EVENT_TYPE_ERROR for e in crashed)
    assert cancelled[-1].type == pb.EVENT_TYPE_END

    points = await _points(metrics)
    for agent in ("weather", "crashing", "stalling"):
        assert _value(points, "runs.started", agent=agent) == 1
        assert _value(points, "runs.live", agent=agent) == 0
    assert _value(points, "runs.finished", agent="weather") == 1
    assert _value(points, "runs.failed", agent="crashing") == 1
    assert _value(points, "runs.cancelled", agent="stalling") == 1
    assert _value(points, "runs.finished", agent="crashing") == 0
    assert _value(points, "cancel.latency", agent="stalling") == 1
    assert _value(points, "runs.queued") == 0
    assert _value(points, "listen.streams") == 0  # every Listen ended
    # Each listener read its run from `begin` to `end`; the events between were streamed by the runs.
    delivered = _value(points, "delivery.latency")
    assert delivered > len(crashed) + len(cancelled)
    assert _value(points, "events.written") == delivered - 2 * 3
    outcomes = {s.name: s.attributes["pydantic_ai_stream.outcome"] for s in spans.get_finished_spans()
                if s.name.startswith("run ") and s.attributes}  # fmt: skip
    assert outcomes == {"run weather": "finished", "run crashing": "failed", "run stalling": "cancelled"}


async def test_listen_streams_open_counts_a_listener_while_it_reads(
    server: RunningServer, metrics: InMemoryMetricReader
) -> None:
    async with _client(server) as client:
        await client.run("stalling", "l1", "think")
        listen = client.listen("l1")
        async for event in listen:
            if event.content_delta == "hard ":
                break
        points = await _points(metrics)
        assert _value(points, "listen.streams") == 1
        assert _value(points, "runs.live", agent="stalling") == 1
        await client.cancel("l1")
        [event async for event in listen]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sample(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(name))


async def test_prometheus_endpoint_is_scraped_during_a_live_run(redis_url: str, settings: Settings) -> None:
    config = _config(redis_url).model_copy(update={"metrics_port": _free_port()})
    async with running_server(config, settings=settings) as server, _client(server) as client:
        url = f"http://127.0.0.1:{config.metrics_port}/metrics"
        await client.run("stalling", "p1", "think")
        listen = client.listen("p1")
        async for event in listen:
            if event.content_delta == "hard ":
                break
        async with httpx.AsyncClient() as http:
            during = (await http.get(url)).text
            assert 'pydantic_ai_stream_runs_live{agent="stalling"' in during
            assert _sample(during, "pydantic_ai_stream_runs_live{").endswith(" 1.0")
            assert _sample(during, "pydantic_ai_stream_runs_queued").endswith(" 0.0")
            assert _sample(during, "pydantic_ai_stream_listen_streams").endswith(" 1.0")
            assert "pydantic_ai_stream_delivery_latency_milliseconds_bucket" in during
            await client.cancel("p1")
            [event async for event in listen]
            await client.run("weather", "p2", "weather?")
            await _until_end(client, "p2")
            assert server.worker is not None
            await server.worker.join()
            after = (await http.get(url)).text
    if path := os.environ.get("TELEMETRY_SAMPLE"):  # for the README: what a scrape shows during a run
        with open(path, "w") as f:  # noqa: ASYNC230 - a test's artefact, written once
            f.write(during)
    assert _sample(after, 'pydantic_ai_stream_runs_finished_total{agent="weather"').endswith(" 1.0")
    assert _sample(after, 'pydantic_ai_stream_runs_cancelled_total{agent="stalling"').endswith(" 1.0")
    assert _sample(after, 'pydantic_ai_stream_runs_live{agent="stalling"').endswith(" 0.0")
    # The endpoint is gone with the server: its port is free again.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the scrapes' connections may be in TIME_WAIT
        s.bind(("127.0.0.1", config.metrics_port or 0))


async def test_queued_runs_gauge_reads_the_queue(redis: Redis, settings: Settings) -> None:
    reader = InMemoryMetricReader()
    async with (
        Telemetry(metric_readers=[reader]) as telemetry,
        Runtime(redis=redis, settings=settings, telemetry=telemetry) as runtime,
    ):
        for i in range(3):
            keys = runtime.keys(scope_id=1, user_id=1, session_id=f"q{i}")
            await runtime.queue.submit(runtime.stream(keys), Submission(agent="weather"))
        assert _value(await _points(reader), "runs.queued") == 3
        async with Worker(runtime=runtime, agents={"weather": weather}) as worker:
            await _until(lambda: _queued_is(reader, 0))
            await worker.join()


async def _queued_is(reader: InMemoryMetricReader, n: int) -> bool:
    return bool(_value(await _points(reader), "runs.queued") == n)


async def test_redis_errors_are_counted(settings: Settings) -> None:
    reader = InMemoryMetricReader()
    dead = Redis(port=_free_port(), retry=Retry(NoBackoff(), 0))  # nothing listens there
    async with (
        Telemetry(metric_readers=[reader]) as telemetry,
        Runtime(redis=dead, settings=settings, telemetry=telemetry) as runtime,
    ):
        async with Worker(runtime=runtime, agents={"weather": weather}):
            await _until(lambda: _claim_failed(reader))
        # The API side too: what a gRPC Run, Listen or Cancel calls.
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="e1")
        with pytest.raises(RedisConnectionError):
            await handle.submit(agent="weather", body={"user_prompt": "hi"})
        with pytest.raises(RedisConnectionError):
            [entry async for entry in handle.listen_entries()]
        with pytest.raises(RedisConnectionError):
            await handle.cancel()
        points = await _points(reader)
        assert [_value(points, "redis.errors", operation=op) for op in ("submit", "listen", "cancel")] == [1, 1, 1]
        assert _value(points, "listen.streams") == 0
    await dead.aclose()


async def _claim_failed(reader: InMemoryMetricReader) -> bool:
    return bool(_value(await _points(reader), "redis.errors", operation="claim") >= 1)


@pytest.mark.e2e
async def test_disabled_telemetry_reports_nothing_and_imports_no_sdk(redis_url: str, settings: Settings) -> None:
    async with running_server(_config(redis_url), settings=settings) as server, _client(server) as client:
        assert server.servicer.runtime.telemetry is None
        await client.run("weather", "d1", "weather?")
        assert (await _until_end(client, "d1"))[-1].type == pb.EVENT_TYPE_END
    # A process that serves and runs without telemetry loads neither the tracing SDK (redis-py loads the metrics
    # SDK itself) nor the exporters and the gRPC instrumentation.
    code = (
        "import asyncio, sys\n"
        "from pydantic_ai_stream.server import ServerSettings, running_server\n"
        "from pydantic_ai_stream.client import StreamClient\n"
        "async def main():\n"
        f"    config = ServerSettings(redis_url={redis_url!r}, port=0)\n"
        "    async with running_server(config) as server, StreamClient(f'127.0.0.1:{server.port}') as client:\n"
        "        await client.run('demo', 'nosdk', 'count these words')\n"
        "        [e async for e in client.listen('nosdk')]\n"
        "asyncio.run(main())\n"
        "loaded = [m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', 'opentelemetry.instrumentation',"
        " 'opentelemetry.exporter', 'prometheus_client'))]\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYDANTIC_AI_STREAM_REDIS_PREFIX": settings.redis_prefix}
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr


def test_a_job_without_traceparent_still_parses() -> None:
    old = {"scope_id": "1", "user_id": "2", "session_id": "s", "run_id": "r", "agent": "a", "options": "{}"}
    job = Job.from_fields("1-0", old)
    assert job.traceparent == ""
    assert "traceparent" not in job.fields()
    traced = Job.from_fields("1-0", {**old, "traceparent": TRACEPARENT})
    assert traced.traceparent == TRACEPARENT
    assert traced.fields()["traceparent"] == TRACEPARENT


class _Collector(trace_service_pb2_grpc.TraceServiceServicer, metrics_service_pb2_grpc.MetricsServiceServicer):
    """An OTLP/gRPC collector: keeps the names of the spans and metrics it is sent."""

    def __init__(self) -> None:
        self.spans: list[str] = []
        self.metrics: set[str] = set()

    async def Export(self, request: Any, context: Any) -> Any:
        if isinstance(request, trace_service_pb2.ExportTraceServiceRequest):
            self.spans += [s.name for r in request.resource_spans for ss in r.scope_spans for s in ss.spans]
            return trace_service_pb2.ExportTraceServiceResponse()
        self.metrics |= {m.name for r in request.resource_metrics for sm in r.scope_metrics for m in sm.metrics}
        return metrics_service_pb2.ExportMetricsServiceResponse()


async def test_spans_and_metrics_are_exported_over_otlp(redis_url: str, settings: Settings) -> None:
    collector = _Collector()
    otlp = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(collector, otlp)
    port = otlp.add_insecure_port("127.0.0.1:0")
    await otlp.start()
    try:
        config = _config(redis_url).model_copy(update={"otlp_endpoint": f"http://127.0.0.1:{port}"})
        async with running_server(config, settings=settings) as server, _client(server) as client:
            assert server.servicer.runtime.telemetry is not None
            await client.run("weather", "o1", "weather?")
            await _until_end(client, "o1")
            assert server.worker is not None
            await server.worker.join()
        # The server's exit shut its telemetry down, which exports what is left.
    finally:
        await otlp.stop(None)
    assert "run weather" in collector.spans
    assert "/pydantic_ai_stream.v1.AgentStreamService/Run" in collector.spans
    assert {"pydantic_ai_stream.runs.finished", "pydantic_ai_stream.events.written"} <= collector.metrics


@pytest.mark.e2e
async def test_a_worker_process_serves_prometheus_metrics(redis_url: str, settings: Settings) -> None:
    port = _free_port()
    env = {**os.environ, "PYDANTIC_AI_STREAM_REDIS_PREFIX": settings.redis_prefix}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pydantic_ai_stream", "worker", "--redis", redis_url, "--metrics-port", str(port),
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    try:
        async with asyncio.timeout(30):
            while b"executing up to" not in await proc.stderr.readline():  # its start-up log line
                pass
            async with httpx.AsyncClient() as http:
                scraped = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
        assert _sample(scraped, "pydantic_ai_stream_runs_queued").endswith(" 0.0")
    finally:
        proc.terminate()
        async with asyncio.timeout(30):
            await proc.communicate()
    assert proc.returncode == 0


async def test_a_run_waiting_behind_another_keeps_its_callers_trace(
    server: RunningServer, spans: InMemorySpanExporter
) -> None:
    async with _client(server) as client:
        await client.run("stalling", "w1", "think")
        listen = client.listen("w1")
        async for event in listen:
            if event.content_delta == "hard ":
                break
        client.metadata = (*client.metadata, ("traceparent", TRACEPARENT))
        waiting = await client.run("weather", "w1", "weather?", if_busy=pb.BUSY_POLICY_ENQUEUE)
        assert waiting.waiting
        await client.cancel("w1")  # the stalling run ends; the waiting one starts
        [event async for event in listen]
        events = await _events_of_run(client, "w1", waiting.run_id)
    assert events[-1].type == pb.EVENT_TYPE_END
    assert server.worker is not None
    await server.worker.join()
    named = _by_name(spans)
    [run] = named["run weather"]
    [stalled] = named["run stalling"]
    assert format(run.context.trace_id, "032x") == TRACE_ID
    assert stalled.context.trace_id != run.context.trace_id


async def _events_of_run(client: StreamClient, session_id: str, run_id: str) -> list[pb.Event]:
    """The events of the session's run `run_id`, once it has begun (Listen gives the session's current run)."""
    found: list[pb.Event] = []

    async def begun() -> bool:
        nonlocal found
        found = await _until_end(client, session_id)
        return bool(event_body(found[0])["run_id"] == run_id)

    await _until(begun)
    return found


async def test_health_checks_make_no_spans(server: RunningServer, spans: InMemorySpanExporter) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with _client(server) as client:
            assert await client.list_active() == []
    names = [span.name for span in spans.get_finished_spans()]
    assert names == ["/pydantic_ai_stream.v1.AgentStreamService/ListActive"]


@pytest.mark.e2e
def test_without_the_otel_extra_the_package_works_and_telemetry_says_what_to_install(
    redis_url: str, settings: Settings
) -> None:
    # The extra's packages made unimportable (pydantic-ai itself needs only opentelemetry-api).
    code = (
        "import sys\n"
        "class Missing:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.startswith(('opentelemetry.sdk', 'opentelemetry.exporter', 'opentelemetry.instrumentation',"
        " 'prometheus_client')):\n"
        "            raise ImportError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Missing())\n"
        "import asyncio\n"
        "from pydantic_ai_stream import Telemetry\n"
        "from pydantic_ai_stream.server import ServerSettings, running_server\n"
        "from pydantic_ai_stream.client import StreamClient\n"
        "async def main():\n"
        f"    config = ServerSettings(redis_url={redis_url!r}, port=0)\n"
        "    async with running_server(config) as server, StreamClient(f'127.0.0.1:{server.port}') as client:\n"
        "        await client.run('demo', 'noextra', 'count these words')\n"
        "        assert [e async for e in client.listen('noextra')][-1].type_name == 'end'\n"
        "asyncio.run(main())\n"
        "try:\n"
        "    Telemetry()\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    env = {**os.environ, "PYDANTIC_AI_STREAM_REDIS_PREFIX": settings.redis_prefix}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    assert "pip install 'pydantic-ai-stream[otel]>=0.2'" in done.stdout


async def test_a_run_handed_back_and_resumed_elsewhere_stays_in_its_trace(redis: Redis, settings: Settings) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # leases a loaded machine still renews
    spans = InMemorySpanExporter()
    model = GatedModel()
    async with (
        Telemetry(span_exporters=[spans]) as telemetry,
        Runtime(redis=redis, settings=settings, telemetry=telemetry) as runtime,
    ):
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="h1")
        await handle.submit(agent="gated", body={"user_prompt": "hi"}, traceparent=TRACEPARENT)
        listening = handle.listen_entries(timeout=10)
        first = Worker(runtime=runtime, agents={"gated": model.agent()})
        await first.start()
        async for entry in listening:
            if entry is not None and entry.body.get("content") == "hello ":
                break
        await first.drain(0)  # a deploy: the run is let go, for another worker to resume
        model.gate.set()
        async with Worker(runtime=runtime, agents={"gated": model.agent()}) as second:
            assert [entry async for entry in listening if entry is not None][-1].type == END
            await second.join()
    runs = sorted(
        (s for s in spans.get_finished_spans() if s.name == "run gated"),
        key=lambda s: s.attributes["pydantic_ai_stream.attempt"] if s.attributes else 0,
    )
    assert [(s.attributes or {}).get("pydantic_ai_stream.outcome") for s in runs] == ["handed_back", "finished"]
    assert [(s.attributes or {}).get("pydantic_ai_stream.attempt") for s in runs] == [1, 2]
    for span in runs:
        assert format(span.context.trace_id, "032x") == TRACE_ID
        assert span.parent is not None
        assert format(span.parent.span_id, "016x") == CALLER_SPAN_ID


async def test_a_run_that_loses_its_lease_is_reported_lost_not_cancelled(redis: Redis, settings: Settings) -> None:
    settings.lease_ttl, settings.lease_renew_interval = 1.0, 0.05  # the loss is seen at the next renewal
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    async with (
        Telemetry(span_exporters=[spans], metric_readers=[reader]) as telemetry,
        Runtime(redis=redis, settings=settings, telemetry=telemetry) as runtime,
    ):
        handle = SessionHandle.of(runtime, scope_id=1, user_id=1, session_id="lost1")
        await handle.submit(agent="stalling", body={"user_prompt": "think"})
        async with Worker(runtime=runtime, agents={"stalling": stalling}):
            listening = handle.listen_entries(timeout=10)
            async for entry in listening:
                if entry is not None and entry.body.get("content_delta") == "hard ":
                    break
            await listening.aclose()  # type: ignore[attr-defined]
            # As if the worker had stalled past its lease: its renewal finds the flag gone.
            await redis.delete(handle.keys.live)
            await _span_ended(spans, "run stalling")
            points = await _points(reader)
    [run] = [s for s in _by_name(spans)["run stalling"] if (s.attributes or {}).get("pydantic_ai_stream.attempt") == 1]
    assert (run.attributes or {}).get("pydantic_ai_stream.outcome") == "lost"
    assert _value(points, "runs.failed", agent="stalling") == 1
    assert _value(points, "runs.cancelled", agent="stalling") == 0
    assert _value(points, "cancel.latency", agent="stalling") == 0
