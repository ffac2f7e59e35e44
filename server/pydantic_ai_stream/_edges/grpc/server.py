"""The running gRPC server: our service, health (following Redis), reflection, A2A and HTTP beside it, malformed
requests refused, graceful shutdown; `serve` runs one until a signal."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2
from redis.exceptions import RedisError

from ..._core.aio import raise_if_cancelled
from ..._core.settings import Settings
from ..._runtime.deps import HostedDeps
from ..._runtime.worker import Worker
from ..._store.redis import AsyncRedis
from ..._store.sessions import Session
from ...v1 import stream_pb2 as pb
from ...v1 import stream_pb2_grpc as pb_grpc
from ..a2a import A2A_SERVICE_NAME
from ..config import ServerSettings, authenticator, credentials, hosted_agents, load_agent
from ..process import redis_client, resources, stop_signals, work
from .proto import ListenResponseCache
from .servicer import AgentStreamServicer, MalformedRequest

if TYPE_CHECKING:
    from ..http import HttpServer
    from ..telemetry import Telemetry

# `ServerSettings`, `load_agent`, `redis_client` and `work` too, where they were before the split.
__all__ = ["RunningServer", "ServerSettings", "load_agent", "redis_client", "running_server", "serve", "work"]

logger = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["AgentStreamService"].full_name
REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"

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
async def _health_following(redis: AsyncRedis, health_servicer: health.aio.HealthServicer) -> AsyncIterator[None]:
    """`_watch_redis` while the context lasts: its task is cancelled and awaited on exit."""
    watch = asyncio.create_task(_watch_redis(redis, health_servicer))
    try:
        yield
    finally:
        watch.cancel()
        await asyncio.gather(watch, return_exceptions=True)  # ended before its client closes


class _MalformedRequests(grpc.aio.ServerInterceptor):
    """Requests whose bytes do not parse, on every service of the server, get INVALID_ARGUMENT (ours after
    authentication) and a rate-limited log line, instead of grpc's UNKNOWN and a traceback per request: they
    parse to a `MalformedRequest`, which our servicer's methods refuse themselves, and a wrapper around the
    other services' handlers. Also the one place that rewrites handlers: Listen's responses, already
    serialized, are sent as they are."""

    def __init__(self, servicer: AgentStreamServicer) -> None:
        self._servicer = servicer
        self._guarded: dict[str, tuple[Any, Any]] = {}
        """By method: the handler the server had, and the one it gets instead."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler: Any = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler  # type: ignore[no-any-return]
        method: str = handler_call_details.method
        cached = self._guarded.get(method)
        if cached is None or cached[0] is not handler:  # built once per method, not per call (nor per stream)
            cached = self._guarded[method] = (handler, self._guard(method, handler))
        return cached[1]  # type: ignore[no-any-return]

    def _guard(self, method: str, handler: Any) -> Any:
        parse = handler.request_deserializer
        malformed = MalformedRequest(method=method)

        def tolerant_parse(raw: bytes) -> Any:
            try:
                return parse(raw)
            except DecodeError:
                return malformed

        if method.startswith(f"/{SERVICE_NAME}/"):
            # The servicer refuses a `MalformedRequest` itself: no layer between grpc and each of Listen's responses,
            # which are the bytes the servicer serialized once for all of a session's listeners.
            sent_as_is = {"response_serializer": None} if method == f"/{SERVICE_NAME}/Listen" else {}
            return handler._replace(request_deserializer=tolerant_parse, **sent_as_is)
        authenticate = method.startswith(f"/{A2A_SERVICE_NAME}/")

        async def check(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            if request is malformed:
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
        return handler._replace(request_deserializer=tolerant_parse, **{kind: guarded})


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
        from ..a2a.service import a2a_routes, add_a2a
    except ImportError as e:
        if config.a2a:
            raise ImportError(f"A2A needs the a2a extra: pip install 'pydantic-ai-stream[a2a]>=0.2' ({e})") from e
        return []
    http_url = None if http is None else config.http_url or http.url
    handler = add_a2a(server, servicer, url=url, http_url=http_url)
    if http is not None:
        http.routes.extend(a2a_routes(handler))
    return [A2A_SERVICE_NAME]


def _add_web(http: HttpServer, servicer: AgentStreamServicer, sessions: Callable[[HostedDeps[Any]], Session]) -> None:
    """Serve the agents as Vercel AI and AG-UI streams on `http` when the `web` extra is installed."""
    try:
        from ..web import web_routes
    except ImportError as e:
        logger.info("no Vercel AI and AG-UI routes on the HTTP port: pip install 'pydantic-ai-stream[web]' (%s)", e)
        return
    http.routes.extend(web_routes(servicer, sessions, stopping=http.stopping))


@contextlib.asynccontextmanager
async def _http(config: ServerSettings) -> AsyncIterator[HttpServer | None]:
    """The HTTP port `config` asks for, bound (its routes still to add), or `None`; stopped (or let go of, if
    the server never started) on exit."""
    if config.http_port is None:
        yield None
        return
    try:
        from ..http import HttpServer
    except ImportError as e:
        raise ImportError(
            f"--http-port needs the a2a or the web extra: pip install 'pydantic-ai-stream[web]' ({e})"
        ) from e
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
    callers = authenticator(config)
    agents = hosted_agents(config, required=config.concurrency > 0)  # serving the API only: the workers' agents do
    tls = credentials(config)
    async with resources(config, settings=settings, telemetry=telemetry) as opened, _http(config) as http:
        runtime, telemetry = opened.runtime, opened.telemetry
        servicer = AgentStreamServicer(
            runtime=runtime,
            agents=agents,
            authenticator=callers,
            model_settings=frozenset(config.model_settings),
            heartbeat_interval=config.heartbeat_interval,
            responses=ListenResponseCache(max_bytes=config.listen_cache_bytes),
            max_prompt_bytes=config.max_prompt_bytes,
            input_bounds=config.input_bounds(),
            sends_bytes=True,  # Listen's responses: the interceptor below sends them without a serializer
        )
        # SO_REUSEPORT only among the processes of `--processes`: else a second server on a taken port must fail,
        # not share it silently.
        reuse = int(config.reuse_port)
        options = [("grpc.so_reuseport", reuse), ("grpc.max_receive_message_length", config.max_request_bytes)]
        interceptors: list[grpc.aio.ServerInterceptor] = [_MalformedRequests(servicer)]
        if telemetry is not None:
            interceptors.insert(0, telemetry.grpc_interceptor())  # outermost: its span covers the others
        server = grpc.aio.server(interceptors=interceptors, options=options)
        pb_grpc.add_AgentStreamServiceServicer_to_server(servicer, server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        address = f"{config.host}:{config.port}"
        port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
        services = [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name]
        url = config.a2a_url or f"{config.host}:{port}"
        services += _add_a2a(server, servicer, config=config, url=url, http=http)
        if http is not None:
            _add_web(http, servicer, opened.sessions)
            from ..web.page import page_routes  # starlette: there when `http` is

            http.routes.extend(page_routes())
        _add_reflection(server, services)
        await server.start()
        if http is not None:
            await http.start()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        worker = (
            Worker(runtime=runtime, agents=agents, concurrency=config.concurrency, sessions=opened.sessions)
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
            "TLS" if tls else "plaintext",
            ", ".join([*sorted(agents), "those live workers host"]),
            f"; and {A2A_SERVICE_NAME} (tenant: agent name)" if A2A_SERVICE_NAME in services else "",
        )
        if http is not None:
            logger.info("serving HTTP on %s (%d routes)", http.url, len(http.routes))
        try:
            async with _health_following(runtime.redis, health_servicer):
                yield running
        finally:
            await running.stop()


async def serve(config: ServerSettings, *, ready: Callable[[RunningServer], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT (with the process-wide `settings`), then shut down gracefully."""
    with stop_signals() as stopping:
        async with running_server(config) as running:
            if ready is not None:
                ready(running)
            await stopping.wait()
            logger.info("shutting down: in-flight runs get %.0f s", config.shutdown_grace)
