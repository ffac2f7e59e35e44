"""`Deps`: the published agent dependencies: a session's identity (its ids, its runtime) and the user's own
fields. The run it writes to (`LiveRun`) is opened and ended by its owner (`Runtime.open_run`, which `run`
uses), and bound to it meanwhile; the session's read-only handle (`SessionHandle`) serves the reads."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic

from pydantic_ai import CancellationToken
from typing_extensions import TypeVar, Unpack

from .._core.entry import Entry
from .._core.errors import PydanticAIStreamError
from .._core.keys import SessionKeys
from .._core.names import ERROR, INFO
from .._core.settings import Settings
from .._read.handle import ListenOptions, SessionHandle
from .._store.redis import AsyncRedis, is_cluster
from .._write.live import LiveRun
from .compat import default_runtime, settings_of
from .runtime import Runtime

__all__ = ["ContextT", "Deps", "HostedDeps"]


@dataclass(kw_only=True)
class Deps(ABC):
    """Agent dependencies bound to one session; subclass it (as a dataclass) and say its scope."""

    redis: AsyncRedis
    user_id: int
    session_id: str
    run_id: str | None = None
    """This run's id; set by `start()` when not given (a caller-chosen id makes retries recognisable)."""
    runtime: Runtime | None = field(default=None, repr=False, compare=False)
    """The owner of the background work its runs and listeners use; `None`: the default runtime of `redis`."""

    _run: LiveRun | None = field(default=None, init=False, repr=False, compare=False)
    _begin_event_id: str | None = field(default=None, init=False, repr=False, compare=False)
    _generated_run_id: str | None = field(default=None, init=False, repr=False, compare=False)

    @abstractmethod
    def get_scope_id(self) -> int:
        """The tenant/organisation the session belongs to (the key's second segment)."""

    # Keys

    def key(self) -> str:
        """The session's stream key, `{prefix}:{scope_id}:{user_id}:{session_id}`."""
        return self.keys().stream

    def key_live(self) -> str:
        """The session's live flag key, `<stream key>:live`."""
        return self.keys().live

    def get_settings(self) -> Settings:
        """The settings its keys follow: its runtime's, else the process-wide `settings` (the default runtime's)."""
        return settings_of(self.runtime)

    def keys(self) -> SessionKeys:
        """All keys of this session; raises `InvalidIdError` for ids that could escape their key space."""
        return self.get_settings().session_keys(
            cluster=is_cluster(self.redis),
            scope_id=self.get_scope_id(),
            user_id=self.user_id,
            session_id=self.session_id,
        )

    def get_runtime(self) -> Runtime:
        """The runtime its runs and listeners use: `runtime`, or the default one of `redis`."""
        return self.runtime if self.runtime is not None else default_runtime(self.redis)

    def handle(self) -> SessionHandle:
        """The session's read-only handle (listen, cancel, is_live) under this deps' runtime."""
        return SessionHandle(runtime=self.get_runtime(), keys=self.keys())

    @property
    def live_run(self) -> LiveRun | None:
        """The run it is bound to (by `start()`, `run`, or its worker), until that run ends."""
        return self._run

    @property
    def cancellation_token(self) -> CancellationToken | None:
        """The pydantic-ai token a cancel of this run fires; `None` until `start()`."""
        return None if self._run is None else self._run.token

    @property
    def begin_event_id(self) -> str | None:
        """Stream entry id of this run's `begin` (set by `start()`)."""
        return self._begin_event_id

    @property
    def lease_lost(self) -> bool:
        """Whether the run lost its live flag (it must stop without saving)."""
        return self._run is not None and self._run.lost

    # Run lifecycle (the write side)

    async def start(self, *, body: dict[str, Any] | None = None) -> None:
        """Take the session's live flag and write `begin` (plus `body`) to a fresh stream; `stop()` ends the
        run (`run` opens its run with `Runtime.open_run` instead, which ends it with its block).

        Raises `SessionBusyError`, writing nothing, if another run of the session is live, and
        `RunExistsError` if this `run_id` is the session's live run or its last one (a retry).
        """
        requested = self.requested_run_id()
        live = await LiveRun.open(self.get_runtime(), self.keys(), run_id=requested, body=body)
        self.attach(live, generated=requested is None)

    def requested_run_id(self) -> str | None:
        """The run id the next run asks for: `run_id`, unless this deps generated it for an earlier run."""
        return self.run_id if self.run_id != self._generated_run_id else None

    def attach(self, live: LiveRun, *, generated: bool = False) -> None:
        """Bind this deps to `live` (its owner's run) until it ends; `generated`: its run id was made for it,
        and is not reused for the next run."""
        self._run, self._begin_event_id, self.run_id = live, live.begin_event_id, live.run_id
        self._generated_run_id = live.run_id if generated else None

    def detach(self) -> None:
        """The run it was bound to ended."""
        self._run = None

    async def stop(self, grace_period: int = 5) -> None:
        """End the run `start()` opened: write `end`, release the live flag, and delete the stream
        `grace_period` seconds later."""
        live, self._run = self._run, None
        if live is not None:
            await self.get_runtime().end_run(live, grace_ms=max(1, grace_period) * 1000)

    def _live(self) -> LiveRun:
        if self._run is None:
            raise PydanticAIStreamError("no run is live on this Deps: call start() (or run()) first")
        return self._run

    async def add(self, *, type: str, origin: str, body: Mapping[str, Any] | None = None) -> None:
        """Append an entry to the stream of the live run started by this `Deps` (queued, in order)."""
        await self._live().add(type, origin, body)

    async def flush(self) -> None:
        """Wait until every event added so far is in Redis (`add` queues; writes go one batch at a time)."""
        if self._run is not None:
            await self._run.flush()

    async def add_error(self, body: dict[str, Any], origin: str = "developer") -> None:
        """Append an `error` entry."""
        await self.add(type=ERROR, origin=origin, body=body)

    async def add_info(self, body: dict[str, Any], origin: str = "developer") -> None:
        """Append an `info` entry."""
        await self.add(type=INFO, origin=origin, body=body)

    async def add_node_begin(self, node: object = None) -> None:
        """Append `llm-begin`: a model request node starts (`node`: the published signature's, unused)."""
        await self._live().add_node_begin()

    async def add_node_end(self) -> None:
        """Append `llm-end`: the model's response has streamed in full."""
        await self._live().add_node_end()

    async def add_node_event(self, event: object) -> None:
        """Append the body of a pydantic-ai stream event, if it carries anything to show."""
        await self._live().add_node_event(event)

    # The session, read-only (any process)

    async def is_live(self) -> bool:
        """Whether a run of this session is live (and not being cancelled)."""
        return await self.handle().is_live()

    async def cancel(self) -> bool:
        """Stop the session's live run, wherever it runs; `True` if there was one to stop."""
        return await self.handle().cancel()

    async def listen(
        self, *, wait: int = 3, timeout: int = 60, serialize: bool = True, after: str | None = None
    ) -> AsyncGenerator[dict[str, Any] | str, None]:
        """Yield the session's events (`{"id", "type", "origin", "body"}`, as JSON if `serialize`) until `end`.

        From the current run's `begin`, or strictly after the event id `after`. Stops quietly after
        `wait` seconds if the stream does not appear, or `timeout` seconds of silence once it has
        (`listen_entries` raises instead, so a caller can tell that from the run's end).
        """
        async for event in self.handle().listen(wait=wait, timeout=timeout, serialize=serialize, after=after):
            yield event

    def listen_entries(self, **options: Unpack[ListenOptions]) -> AsyncIterator[Entry | None]:
        """`listen` as typed `Entry`s: `SessionHandle.listen_entries` (`wait=3`, `timeout=60`, `after=None`,
        `heartbeat=None`), which raises where `listen` stops quietly."""
        return self.handle().listen_entries(**options)


ContextT = TypeVar("ContextT", default=dict[str, Any])
"""What a hosted run's request context is: a dict, or the model its agent declares (`HostedDeps[Model]`)."""


@dataclass(kw_only=True)
class HostedDeps(Deps, Generic[ContextT]):
    """The deps of runs of agents a server hosts (started through the service, run by its workers): the
    scope comes from the caller, and so does the request context (`RunRequest.context`).

    An agent declares the context it expects with `deps_type=HostedDeps[Model]` (a pydantic model, a dataclass
    or a `TypedDict`): a run's context is validated against it when it is accepted (INVALID_ARGUMENT if it does
    not validate) and `context` is an instance of it; else `context` is the JSON object as sent (`{}`: none).
    """

    scope_id: int
    context: ContextT = field(default_factory=dict)  # type: ignore[assignment]  # the default of the default type
    """The request context the run was started with (read in tools and instructions as `ctx.deps.context`)."""

    def get_scope_id(self) -> int:
        return self.scope_id
