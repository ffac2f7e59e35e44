"""`Worker`: executes runs from the run queue, a bounded number at once, each under its own lease.

`pydantic-ai-stream serve` runs one beside its gRPC service; `pydantic-ai-stream worker` runs one alone,
so the API tier and the execution tier scale apart. Every worker claims from the same consumer group;
a run is executed by the worker that adopts its flag, so a job claimed twice still runs once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pydantic_ai.agent import AbstractAgent
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from .._core.aio import raise_if_cancelled
from .._core.errors import AgxCanceledError, InvalidRequestError, LeaseLostError
from .._core.keys import SessionKeys, queue_wake_key
from .._core.metrics import Outcome, RunReport
from .._core.names import ORIGIN_STREAM
from .._durable.acks import JobAcks
from .._durable.fleet import Advertisement
from .._durable.job import Job
from .._store.redis import AsyncRedis, is_cluster, own_pool
from .._store.results import Held
from .._store.sessions import RedisSession, Session
from .._write.live import LiveRun
from .deps import HostedDeps
from .inputs import hosted_context, user_prompt_of
from .loop import drive
from .runtime import Runtime

__all__ = ["Worker"]

logger = logging.getLogger(__name__)

CLAIM_BLOCK_MS = 2000
"""Longest wait of one claim (a stopping worker wakes its own); under redis-py's default socket timeout
(5 s), so a worker on a client made with defaults does not see its idle claims time out."""
LEASE_MARGIN = 0.01
"""Seconds past a lease's expiry a taker waits before it looks again."""
RECLAIM_AFTER = 1
"""Lease TTLs a claimed job may go without its worker's sign of life before another worker takes it: by
then the run's lease lapsed too (both are renewed at the same interval), so the taker can resume it. A
job taken from a worker that is only slow is left to it (see `_execute`)."""


def _default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(eq=False, kw_only=True)
class Worker:
    """Claims queued runs of `agents` and executes them, at most `concurrency` at once.

    Use it as `async with Worker(runtime=..., agents=...)`: on exit it stops claiming and hands the runs
    still going back to the queue, where another worker resumes them; `drain(grace)` gives them time first.
    """

    runtime: Runtime
    agents: Mapping[str, AbstractAgent[Any, Any]]
    concurrency: int = 64
    name: str = field(default_factory=_default_name)
    """This worker's consumer name in the queue's group."""
    sessions: Callable[[HostedDeps], Session] = RedisSession.of
    """The conversation a run continues and saves: in Redis by default (`PostgresSession.of` for PostgreSQL)."""
    _runs: set[asyncio.Task[None]] = field(default_factory=set)
    _live: dict[asyncio.Task[None], LiveRun] = field(default_factory=dict)
    """The runs executing, by the task executing each."""
    _claimed: dict[str, Job] = field(default_factory=dict)
    """The jobs this worker holds, by id: it shows the queue it still works on them."""
    _claimer: asyncio.Task[None] | None = None
    _keeper: asyncio.Task[None] | None = None
    _advertisement: Advertisement | None = None
    """The agents hosted here, advertised to the fleet while the worker runs."""
    _acks: JobAcks = field(init=False)
    """The jobs done, acknowledged in batches."""
    _slot_free: asyncio.Event = field(default_factory=asyncio.Event)
    _stopping: bool = False
    _takeover: bool = False
    """A job of a dead worker waits: the next free slot takes it over, before any new job."""

    def __post_init__(self) -> None:
        self._acks = JobAcks(queue=lambda: self.runtime.queue)

    async def __aenter__(self) -> Worker:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drain(0)

    @property
    def _wake_key(self) -> str:
        return queue_wake_key(self.runtime.settings.redis_prefix, self.name)

    @property
    def running(self) -> int:
        """Runs executing now."""
        return len(self._runs)

    async def join(self) -> None:
        """Wait until no run is executing here (also runs claimed meanwhile)."""
        while self._runs:
            await asyncio.gather(*self._runs, return_exceptions=True)

    async def start(self) -> None:
        """Claim runs in the background (Redis need not answer yet)."""
        if self.concurrency < 1:
            raise ValueError("a worker needs a concurrency of at least 1")
        self._claimer = asyncio.create_task(self._claim_loop())
        self._keeper = asyncio.create_task(self._keep_jobs())
        self._advertisement = Advertisement(runtime=self.runtime, worker=self.name, agents=list(self.agents))
        self._advertisement.start()

    async def drain(self, grace: float, *, hand_back: bool = True) -> None:
        """Stop claiming, give the runs going `grace` seconds, then hand the rest back to the queue (another
        worker resumes each; with `hand_back=False`, cancel them: `error` canceled + `end`) and wait."""
        self._stopping = True
        self._slot_free.set()
        if self._claimer is not None:
            # Woken, not cancelled mid-read: jobs a cancelled read had claimed would be left to nobody.
            with contextlib.suppress(RedisError, OSError):
                await self.runtime.queue.wake(self._wake_key)
            await asyncio.gather(self._claimer, return_exceptions=True)
        if self._runs:
            _, pending = await asyncio.wait(set(self._runs), timeout=grace)
            for task in pending:
                live = self._live.get(task)
                if hand_back and live is not None:
                    live.handing_back = True
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._acks.aclose()
        if self._keeper is not None:
            self._keeper.cancel()
            await asyncio.gather(self._keeper, return_exceptions=True)
        if self._advertisement is not None:
            await self._advertisement.aclose()

    async def _claim_loop(self) -> None:
        queue = self.runtime.queue
        redis = self.runtime.redis
        # The blocking claim holds its connection: its own, not one of the shared pool's.
        client: AsyncRedis = redis if is_cluster(redis) else Redis.from_pool(own_pool(redis))
        failures = 0
        grouped = False
        try:
            while not self._stopping:
                free = self.concurrency - len(self._runs)
                if free <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                try:
                    if not grouped:
                        await queue.create_group(wake=self._wake_key)
                        grouped = True
                    if self._takeover:  # runs cut short come before new work
                        jobs = await queue.reclaim(self.name, idle_ms=self._idle_ms, count=free)
                        self._takeover = len(jobs) == free  # maybe more
                    else:
                        jobs = await queue.claim(
                            client=client, consumer=self.name, count=free, block_ms=CLAIM_BLOCK_MS, wake=self._wake_key
                        )
                except (RedisError, OSError) as e:
                    raise_if_cancelled()
                    if isinstance(e, ResponseError) and "NOGROUP" in str(e):
                        grouped = False  # the queue was deleted (e.g. FLUSHALL): create it again
                        continue
                    self._redis_error("claim")
                    failures += 1
                    logger.warning("worker %s could not claim runs (%s); retrying", self.name, e)
                    await asyncio.sleep(min(2.0, 0.05 * 2**failures))  # back-off
                    continue
                failures = 0
                self._start(jobs)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(redis.delete(self._wake_key))
            if client is not redis:
                with contextlib.suppress(Exception):
                    await asyncio.shield(client.aclose())

    def _start(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._claimed[job.id] = job
            task = asyncio.create_task(self._execute(job))
            self._runs.add(task)
            task.add_done_callback(self._run_done)

    @property
    def _idle_ms(self) -> int:
        return int(RECLAIM_AFTER * self.runtime.settings.lease_ttl * 1000)

    async def _keep_jobs(self) -> None:
        """Show the queue the jobs held here are worked on, and look for those of workers that died.

        A job's idle time restarts at each renewal interval here; one idle for `RECLAIM_AFTER` lease TTLs
        belongs to a worker that is gone (killed, stalled past its leases, or stopped before it adopted the
        run): the claim loop takes it over at its next free slot, before any new job, so a run whose worker
        died is resumed about a lease TTL after its last renewal, or when a slot frees, whatever is queued.
        """
        config = self.runtime.settings
        queue = self.runtime.queue
        while True:
            raise_if_cancelled()  # a cancel the last Redis call completed over still stops us
            await asyncio.sleep(config.lease_renew_interval)  # a periodic timer, not synchronisation
            try:
                await queue.heartbeat(self.name, list(self._claimed))
                if not self._stopping and not self._takeover and await queue.abandoned(idle_ms=self._idle_ms):
                    self._takeover = True
                    if self.running < self.concurrency:  # the claim loop waits for new jobs: end its wait
                        await queue.wake(self._wake_key)
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                self._redis_error("renew_jobs")
                logger.warning("worker %s could not renew its jobs (%s)", self.name, e)

    def _redis_error(self, operation: str) -> None:
        self.runtime.metrics.redis_error(operation)

    def _run_done(self, task: asyncio.Task[None]) -> None:
        self._runs.discard(task)
        self._slot_free.set()

    async def _execute(self, job: Job) -> None:
        runtime = self.runtime
        adopted = False
        live = None
        task = asyncio.current_task()
        try:
            keys = runtime.keys(scope_id=job.scope_id, user_id=job.user_id, session_id=job.session_id)
            taken = await self._adopt(job, keys)
            # A job taken over from a worker that is alive after all (slow, not dead) is left to it: its
            # next sign of life takes the job back.
            adopted = not isinstance(taken, Held)
            live = taken if isinstance(taken, LiveRun) else None
            if live is not None:
                if task is not None:
                    self._live[task] = live
                await self._run(job, live)
        except (AgxCanceledError, LeaseLostError):
            pass
        except Exception:
            logger.exception("run %s of session %r failed", job.run_id, job.session_id)
            adopted = True
        finally:
            if task is not None:
                self._live.pop(task, None)
            with contextlib.suppress(Exception):
                if live is not None and live.handing_back:
                    await asyncio.shield(runtime.queue.hand_back(self.name, job.id))
                elif adopted and not (live is not None and live.lost):
                    # Not when the worker stopped before it could adopt the run (another takes the job over),
                    # nor when it lost the run's lease (another worker resumed it and holds the job now).
                    await asyncio.shield(self._acks.done(job.id))
                    if live is None:  # its run ended without running (cancelled, out of attempts)
                        stream = runtime.stream(keys)
                        await asyncio.shield(stream.drop_attachments(job.run_id))
                        await asyncio.shield(runtime.run_ended(stream))
            self._claimed.pop(job.id, None)

    async def _adopt(self, job: Job, keys: SessionKeys) -> LiveRun | Held | None:
        """Adopt the job's run, or take it over from a worker that died (`Held`: a worker holds it; `None`:
        nothing to run), retrying while Redis fails and the worker runs: a failed adoption must not drop a
        run."""
        runtime = self.runtime
        failures = 0
        while True:
            try:
                live = await LiveRun.adopt(runtime, keys, run_id=job.run_id, adopter=self.adopter(job))
                if live is not None:
                    return live
                # Not queued: maybe running on a worker that died (a job taken over).
                taken = await self._recover(job, keys)
                if isinstance(taken, LiveRun):
                    does = "ends cancelled" if taken.token.cancelled else "resumes"
                    logger.warning("worker %s %s run %s (attempt %d)", self.name, does, job.run_id, taken.attempt)
                return taken
            except (RedisError, OSError) as e:
                raise_if_cancelled()
                self._redis_error("adopt")
                failures += 1
                if self._stopping:
                    raise
                logger.warning("worker %s could not adopt run %s (%s); retrying", self.name, job.run_id, e)
                await asyncio.sleep(min(2.0, 0.05 * 2**failures))  # back-off

    def adopter(self, job: Job) -> str:
        """Who adopts the job's run: this worker, for this job (a retried adoption whose reply was lost is its own)."""
        return f"{self.name}/{job.id}"

    async def _recover(self, job: Job, keys: SessionKeys) -> LiveRun | Held | None:
        """Take over the run of a job taken from a silent worker. Its job and its lease are renewed at the
        same interval, but not at the same instant: a lease a little younger than the job's last sign of
        life is waited out once (not another `RECLAIM_AFTER` TTLs); a worker alive after all renews it."""
        runtime = self.runtime
        taken = await LiveRun.recover(runtime, keys, run_id=job.run_id)
        if isinstance(taken, Held) and taken.left_ms <= runtime.leases.lease_ms:
            await asyncio.sleep(taken.left_ms / 1000 + LEASE_MARGIN)  # the lease's expiry, a timer
            taken = await LiveRun.recover(runtime, keys, run_id=job.run_id)
        return taken

    async def _run(self, job: Job, live: LiveRun) -> None:
        """Execute the adopted run `live`, which the runtime ends when this returns."""
        runtime = self.runtime
        agent = self.agents.get(job.agent)
        deps: HostedDeps[Any] = HostedDeps(
            redis=runtime.redis,
            runtime=runtime,
            scope_id=job.scope_id,
            user_id=job.user_id,
            session_id=job.session_id,
        )
        deps.attach(live)
        live.job = {name: value for name, value in job.fields().items() if name != "continues"}
        live.continues = live.continues or job.continues  # also a job its first part's worker left unacknowledged
        try:
            if agent is None:
                raise InvalidRequestError(f"agent {job.agent!r} is not hosted by this worker")
            deps.context = hosted_context(agent, job.agent, job.context)
            # A run going on after its wait for input has its prompt (and attachments) in its history.
            user_prompt = "" if live.continues else await user_prompt_of(live)
        except InvalidRequestError as e:
            async with runtime.owning(live):
                await deps.add_error({"msg": str(e)}, origin=ORIGIN_STREAM)
            return
        report = RunReport(
            agent=job.agent,
            run_id=job.run_id,
            session_id=job.session_id,
            attempt=live.attempt,
            traceparent=job.traceparent,
        )
        error: BaseException | None = None
        with runtime.metrics.run(report) as instrumented:
            try:
                async with runtime.owning(live):  # ended inside the run's span: its `end` is part of it
                    await drive(self.sessions(deps), agent, user_prompt, deps, **instrumented, **job.options)
            except BaseException as e:
                error = e
                raise
            finally:
                report.outcome, report.cancelled_at = _outcome(live, error), live.lease.cancelled_at


def _outcome(live: LiveRun, error: BaseException | None) -> Outcome:
    """How a run's execution ended here: a lost lease first, whatever the run raised then (its token's cancel,
    a refused write), since that is why it stopped."""
    if live.lost:
        return "lost"
    if error is None:
        return "waiting" if live.waiting is not None else "finished"
    if isinstance(error, asyncio.CancelledError):
        return "handed_back" if live.handing_back else "cancelled"
    return "cancelled" if isinstance(error, AgxCanceledError) else "failed"
