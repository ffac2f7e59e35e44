"""A server's or worker's configuration (`ServerSettings`, read from flags and `PYDANTIC_AI_STREAM_*`) and what
it names: the hosted agents, the callers' authentication, the TLS credentials."""

from __future__ import annotations

import contextlib
import importlib
import ipaddress
import logging
from pathlib import Path
from typing import Any

import grpc
from pydantic import AliasChoices, Field, model_validator
from pydantic_ai.agent import AbstractAgent
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._core.inputs import (
    DEFAULT_MAX_ATTACHMENT_BYTES,
    DEFAULT_MAX_ATTACHMENTS,
    DEFAULT_MAX_ATTACHMENTS_BYTES,
    DEFAULT_MAX_CONTEXT_BYTES,
    InputBounds,
)
from .._runtime.auth import Anonymous, Authenticator, Caller, StaticTokens
from .grpc.servicer import DEFAULT_MAX_PROMPT_BYTES, DEFAULT_MODEL_SETTINGS

__all__ = ["ServerSettings", "authenticator", "credentials", "hosted_agents", "load_agent"]

logger = logging.getLogger(__name__)


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
    processes: int = Field(default=1, ge=1, le=1024)
    """Processes to run (`serve`: on one port, with SO_REUSEPORT), each its own event loop, Redis pool and worker;
    more than one needs a shared Redis (`redis_url`)."""
    reuse_port: bool = False
    """Share the port with other processes that set it (as `processes` does for its own); else a taken port fails."""
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
    max_context_bytes: int = Field(default=DEFAULT_MAX_CONTEXT_BYTES, ge=2)
    """Largest `Run` context, as compact UTF-8 JSON; larger ones are INVALID_ARGUMENT."""
    max_attachments: int = Field(default=DEFAULT_MAX_ATTACHMENTS, ge=0, le=1000)
    """Most attachments a `Run` may carry."""
    max_attachment_bytes: int = Field(default=DEFAULT_MAX_ATTACHMENT_BYTES, ge=1)
    """Largest attachment: its data's bytes, or its URL's length."""
    max_attachments_bytes: int = Field(default=DEFAULT_MAX_ATTACHMENTS_BYTES, ge=0)
    """Largest sum of a `Run`'s attachments (data and URLs)."""
    max_request_bytes: int = Field(default=8 * 1024 * 1024, ge=4 * 1024 * 1024)
    """Largest request the server reads; larger ones are RESOURCE_EXHAUSTED (HTTP: 413). At least
    `max_prompt_bytes` + `max_context_bytes` + `max_attachments_bytes` + 256 KiB (checked at start), so that a
    run over one of those limits gets INVALID_ARGUMENT, which says why."""
    telemetry: bool = False
    """OpenTelemetry traces and metrics (the `otel` extra), exported over OTLP to `OTEL_EXPORTER_OTLP_ENDPOINT`
    if set; on as well when `metrics_port` or `otlp_endpoint` is set. Off: nothing is imported or measured."""
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    """Serve Prometheus metrics on this port (`/metrics`, on `host`)."""
    otlp_endpoint: str | None = None
    """Export traces and metrics over OTLP/gRPC to this collector (e.g. `http://localhost:4317`); the
    `OTEL_EXPORTER_OTLP_*` variables apply (headers, TLS)."""

    @model_validator(mode="after")
    def _request_admits_bounds(self) -> ServerSettings:
        needed = self.max_prompt_bytes + self.max_context_bytes + self.max_attachments_bytes + REQUEST_OVERHEAD
        if self.max_request_bytes < needed:
            raise ValueError(
                f"max_request_bytes ({self.max_request_bytes}) must admit a run at every bound: at least {needed} "
                "(max_prompt_bytes + max_context_bytes + max_attachments_bytes + 256 KiB); raise it or lower those"
            )
        return self

    def input_bounds(self) -> InputBounds:
        """The bounds of a run's context and attachments."""
        return InputBounds(
            max_context_bytes=self.max_context_bytes,
            max_attachments=self.max_attachments,
            max_attachment_bytes=self.max_attachment_bytes,
            max_attachments_bytes=self.max_attachments_bytes,
        )


REQUEST_OVERHEAD = 256 * 1024
"""Bytes of a `RunRequest` past its prompt, context and attachments' sizes: ids, model settings, media types,
names, framing."""


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


def authenticator(config: ServerSettings) -> Authenticator:
    """Who may call: the `tokens`, or without any, every caller as one anonymous user (loopback only)."""
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


def hosted_agents(config: ServerSettings, *, required: bool = True) -> dict[str, AbstractAgent[Any, Any]]:
    """The agents `config` names (and `demo`); unless `required`, none will do."""
    agents = {name: load_agent(path) for name, path in config.agents.items()}
    if config.demo:
        from .demo import agent as demo

        agents.setdefault("demo", demo)
    if not agents and required:
        raise ValueError("no agents to serve: pass --agent NAME=package.module:attr")
    return agents


def credentials(config: ServerSettings) -> grpc.ServerCredentials | None:
    """The TLS credentials `config` names (mTLS with `tls_client_ca`); `None`: plaintext."""
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
