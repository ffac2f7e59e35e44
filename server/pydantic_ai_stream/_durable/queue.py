"""The run queue: runs accepted by any process, executed by whichever worker claims them.

`submit` writes the run's `begin` to its session's stream (its flag saying `queued:<run id>`) and adds a job
to its scope's job stream. Workers claim jobs in turns of the scopes with jobs waiting, one job per scope
per turn, so one scope's backlog delays another scope's run by at most one job per scope with jobs waiting.
A job claimed enters a Redis Stream with one consumer group (`workers`), the queue, and is read from it with
`XREADGROUP` in the same script; the worker adopts the run's flag as its lease, runs it and acknowledges the
job. A job of a worker that died is taken over before any new job (see `Worker`). A scope's runs not yet
claimed are counted in a sorted set of its own, which bounds them (`QueueFullError`). The queue's keys share
one hash tag, so each of its scripts touches one slot of a Redis Cluster; a session's keys are in another
slot, so each step is written to be safe to repeat: a re-sent `submit` re-adds its job, and a job whose run
is no longer queued is dropped by the worker that claims it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.exceptions import RedisError, ResponseError

from .._core.entry import decode
from .._core.errors import (
    QueueFullError,
    RunExistsError,
    SessionBusyError,
)
from .._core.inputs import encode_attachments
from .._core.keys import QueueKeys, SessionKeys, cancel_channel, check_id, run_id_or_new
from .._core.settings import Settings
from .._core.submission import Submission, Submitted
from .._store.redis import AsyncRedis, is_cluster, xread_entries_by_key
from .._store.results import Enqueue, OpenState, WaitState
from .._store.scripts import READY_MAXLEN
from .._store.stream import SessionStream
from .job import Job, queued_member
from .scripts import Reservation, add_job, claim_jobs, reserve, unclaimed_jobs

__all__ = ["GROUP", "RunQueue"]

logger = logging.getLogger(__name__)

GROUP = "workers"
"""The consumer group every worker claims jobs in."""
HANDED_BACK_IDLE_MS = 86_400_000
"""The idle time a handed-back job is given: longer than any worker waits before taking a job over."""
WAKE_TTL = 86_400
"""Seconds a worker's wake-up stream lives (the worker creates it again when it is gone)."""


@dataclass(frozen=True, kw_only=True)
class RunQueue:
    """The run queue of a key prefix on one Redis client (see the module docstring)."""

    redis: AsyncRedis
    prefix: str
    max_queued: int
    """Runs a scope may have waiting for a worker."""
    wait_ms: int
    """How long a queued run's flag lives: a run no worker claims within it is ended as lost. Also how long a
    durable run's record outlives its worker, and a run waiting behind another outlives that one's lease."""

    @classmethod
    def of(cls, redis: AsyncRedis, settings: Settings) -> RunQueue:
        """The run queue under `settings`' prefix, bounded as they say."""
        return cls(
            redis=redis,
            prefix=settings.redis_prefix,
            max_queued=settings.max_queued_runs,
            wait_ms=min(settings.queue_wait, settings.stream_retention) * 1000,
        )

    @property
    def key(self) -> str:
        """The stream of the jobs claimed (see `QueueKeys`)."""
        return self.keys.queue

    @property
    def keys(self) -> QueueKeys:
        """The keys of the queue's jobs and turns."""
        return QueueKeys.build(self.prefix)

    async def submit(self, stream: SessionStream, run: Submission) -> Submitted:
        """Accept `run` on the session of `stream`: its `begin` (the ids, then its body) is in the stream and its
        job in the queue when this returns; its span continues the trace of its `traceparent`.

        Raises `QueueFullError` or `SessionBusyError` writing nothing, and `RunExistsError` if its `run_id` is
        the session's queued, live or last run (a retry: nothing runs twice).
        """
        run_id = run_id_or_new(run.run_id)
        keys = stream.keys
        session_id, scope_id = keys.session_id, keys.scope_id
        job = Job(
            scope_id=scope_id,
            user_id=keys.user_id,
            session_id=session_id,
            run_id=run_id,
            agent=run.agent,
            options=run.options or {},
            traceparent=run.traceparent or "",
            context=run.context or {},
        )
        # The ids first (as `open` needs), then the agent (which callers limited to some agents check).
        ids = {"session_id": session_id, "run_id": run_id, "agent": run.agent}
        open_run = partial(
            stream.open,
            run_id=run_id,
            lease_ms=self.wait_ms,
            begin={**ids, **(run.body or {}), **ids},
            nonce=uuid.uuid4().hex,
            queued=True,
        )
        # Kept before the run can be claimed; kept already (`False`) for a retry, or a run that waited behind another.
        # A failed open keeps them: its reply may be what was lost (they expire unless a worker adopts the run).
        stored = await self._store_attachments(stream, run_id, run)
        try:
            state, begin_event_id = await self._open(stream, job, open_run)
        except QueueFullError:  # refused before the run was opened (a Redis Cluster's first step)
            if stored:
                await stream.drop_attachments(run_id)
            raise
        if stored and state not in (OpenState.OPENED, OpenState.QUEUED):
            await stream.drop_attachments(run_id)  # refused, or a retry of a run that no longer needs them
        if state is OpenState.OPENED:
            return Submitted(run_id=run_id, begin_event_id=begin_event_id)
        if state is OpenState.FULL:
            raise QueueFullError(scope_id, self.max_queued)
        if state is OpenState.BUSY:
            raise SessionBusyError(session_id)
        raise RunExistsError(session_id, run_id=run_id, begin_event_id=begin_event_id)

    async def _open(
        self, stream: SessionStream, job: Job, open_run: Callable[..., Awaitable[tuple[OpenState, str]]]
    ) -> tuple[OpenState, str]:
        """Open the run of `job` (`open_run`) and add the job, in one script, or in steps on a Redis Cluster."""
        if is_cluster(self.redis):
            return await self._submit_in_steps(stream, job, open_run)
        # One script: no step of it can be lost without the others.
        queue_keys = self.keys
        enqueue = Enqueue(
            queue=queue_keys.jobs(job.scope_id),
            queued=queue_keys.queued(job.scope_id),
            member=job.member,
            limit=self.max_queued,
            fields=job.fields(),
            scopes=queue_keys.scopes,
            turn=queue_keys.turn,
            ready=queue_keys.ready,
        )
        return await open_run(enqueue=enqueue)

    async def _store_attachments(self, stream: SessionStream, run_id: str, run: Submission) -> bool:
        """Keep `run`'s attachments until a worker adopts it (as long as it may wait); whether this call kept them."""
        if not run.attachments:
            return False
        blob = encode_attachments(run.attachments)
        return await stream.store_attachments(run_id=run_id, attachments=blob, ttl_ms=self.wait_ms)

    async def wait_behind(self, stream: SessionStream, run: Submission, *, first: bool = False) -> Submitted | None:
        """Accept `run` (its id given) behind the session's queued or live run (and the runs already waiting
        there, unless `first`): it starts when they ended (`promote`). It counts as queued in its scope
        (`QueueFullError`). `None` if the session has no run any more: `submit` it instead."""
        run_id = check_id("run_id", run.run_id)
        keys = stream.keys
        job = Job(
            scope_id=keys.scope_id, user_id=keys.user_id, session_id=keys.session_id, run_id=run_id, agent=run.agent
        )
        await self._reserve(job)
        stored = False
        try:
            stored = await self._store_attachments(stream, run_id, run)
            state = await stream.wait_behind(run_id=run_id, run=run.waiting(), ttl_ms=self.wait_ms, first=first)
        except BaseException:
            await self.release(keys.scope_id, job.member)
            if stored:
                await stream.drop_attachments(run_id)
            raise
        if state is WaitState.NO_RUN:
            await self.release(keys.scope_id, job.member)
            if stored:  # the caller submits the run, attachments and all
                await stream.drop_attachments(run_id)
            return None
        return Submitted(run_id=run_id, begin_event_id="", waiting=True)

    async def promote(self, stream: SessionStream) -> None:
        """Start the first run waiting behind the session's run, if the session is free: each process that
        sees a run of the session end calls this (at most one start wins; the rest find it started). A
        Redis failure is logged, not raised: the run that ended stays ended."""
        try:
            await self._promote(stream)
        except (RedisError, OSError) as e:
            logger.warning("could not start the run waiting in session %r (%s)", stream.keys.session_id, e)

    async def _promote(self, stream: SessionStream) -> None:
        item = await stream.first_waiting()
        if item is None:
            return
        try:
            await self.submit(stream, Submission.of_waiting(json.loads(item)))
        except RunExistsError:
            pass  # started already, by another process seeing the same end
        except SessionBusyError:
            return  # another run took the session first: it waits on, for that run's end
        await stream.started_waiting(item)

    async def _submit_in_steps(
        self, stream: SessionStream, job: Job, open_run: Callable[[], Awaitable[tuple[OpenState, str]]]
    ) -> tuple[OpenState, str]:
        """`submit` on a Redis Cluster, whose session and queue keys live in different slots: count the run,
        open it, add its job; a step that fails undoes the ones before it where it can."""
        await self._reserve(job)
        try:
            state, begin_event_id = await open_run()
        except BaseException:
            await self.release(job.scope_id, job.member)
            raise
        if state not in (OpenState.OPENED, OpenState.QUEUED):
            await self.release(job.scope_id, job.member)
            return state, begin_event_id
        try:
            # Also for a retry of a queued run: its first job may not have been added.
            await add_job(self.redis, self.keys, scope_id=job.scope_id, fields=job.fields())
        except BaseException:
            if state is OpenState.OPENED:  # no job would ever run it: end it rather than hold the session
                with contextlib.suppress(Exception):
                    await stream.cancel(cancel_channel(self.prefix))
                    await self.release(job.scope_id, job.member)
            raise
        return state, begin_event_id

    async def _reserve(self, job: Job) -> None:
        limit, now_ms = self.max_queued, int(time.time() * 1000)
        reserved = await reserve(
            self.redis,
            self.keys,
            scope_id=job.scope_id,
            member=job.member,
            limit=limit,
            now_ms=now_ms,
            wait_ms=self.wait_ms,
        )
        if reserved is Reservation.FULL:
            raise QueueFullError(job.scope_id, limit)

    async def release(self, scope_id: int, member: str) -> None:
        """The run `member` (see `queued_member`) no longer waits: a worker claimed it, or it was
        cancelled or refused."""
        await self.redis.zrem(self.keys.queued(scope_id), member)

    async def depth(self, scope_id: int) -> int:
        """Runs of the scope waiting for a worker (or behind their session's run)."""
        return int(await self.redis.zcount(self.keys.queued(scope_id), int(time.time() * 1000), "+inf"))

    async def keep_waiting(self, runs: Sequence[tuple[SessionKeys, str]]) -> None:
        """The runs `(session keys, run id)` still wait behind their session's run: they stay counted in their
        scope another `wait_ms` (their session's run, renewed, extends their place there as long)."""
        if not runs:
            return
        deadline, queue_keys = int(time.time() * 1000) + self.wait_ms, self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            for keys, run_id in runs:
                member = queued_member(keys.user_id, keys.session_id, run_id)
                pipe.zadd(queue_keys.queued(keys.scope_id), {member: deadline}, xx=True)
                pipe.pexpire(keys.attachments(run_id), self.wait_ms)  # its attachments, if it has any, as long
            await pipe.execute()

    async def waiting(self) -> int:
        """Runs in the queue no worker has claimed yet, of every scope (jobs in the scopes' job streams, and
        in the queue less those claimed)."""
        return await unclaimed_jobs(self.redis, self.keys, group=GROUP)

    async def create_group(self, *, wake: str | None = None) -> None:
        """Create the workers' consumer group (and the queue) if there is none yet, on the queue and its
        ready stream; and on the wake-up stream `wake` of one worker (see `claim`)."""
        for key in (self.key, self.keys.ready, *([wake] if wake else [])):
            try:
                await self.redis.xgroup_create(key, GROUP, id="0", mkstream=True)
            except ResponseError as e:
                if "BUSYGROUP" not in str(e):
                    raise
        if wake:
            # A killed worker's stream goes too; a live worker whose stream expired creates it again.
            await self.redis.expire(wake, WAKE_TTL)

    async def claim(self, *, client: AsyncRedis, consumer: str, count: int, block_ms: int, wake: str) -> list[Job]:
        """Up to `count` jobs no worker has claimed yet, in the scopes' turns, waiting up to `block_ms` for
        one on `client` (whose connection the wait holds); an entry added to the stream `wake` ends the wait
        at once, with no job."""
        jobs = await self._claim(consumer, count)
        if jobs:
            return jobs
        # A job added since the look above left an entry no worker read yet: the wait ends at once.
        streams: dict[Any, Any] = {self.keys.ready: ">", wake: ">"}
        reply = await client.xreadgroup(GROUP, consumer, streams, count=READY_MAXLEN, block=block_ms, noack=True)
        if any(decode(key) == wake for key, _ in xread_entries_by_key(reply)):
            return []
        return await self._claim(consumer, count) if reply else []

    async def _claim(self, consumer: str, count: int) -> list[Job]:
        entries = await claim_jobs(self.redis, self.keys, group=GROUP, consumer=consumer, count=count)
        return await self._jobs(entries)

    async def heartbeat(self, consumer: str, job_ids: Sequence[str]) -> None:
        """Show that `consumer` still works on these jobs: their idle time starts again (see `reclaim`)."""
        if job_ids:
            await self.redis.xclaim(self.key, GROUP, consumer, 0, list(job_ids), justid=True)

    async def reclaim(self, consumer: str, *, idle_ms: int, count: int) -> list[Job]:
        """Up to `count` jobs whose worker has not shown for `idle_ms` (it died, or was stopped before it
        could adopt their runs), now `consumer`'s; a job whose run is not queued any more is dropped by it."""
        entries: list[tuple[Any, Any]] = []
        cursor = "0-0"
        while len(entries) < count:  # each look scans a part of the claimed jobs: go on to their end
            reply = await self.redis.xautoclaim(self.key, GROUP, consumer, idle_ms, cursor, count=count - len(entries))
            entries += reply[1]
            cursor = decode(reply[0])
            if cursor == "0-0":
                break
        return await self._jobs(entries)

    async def abandoned(self, *, idle_ms: int) -> bool:
        """Whether a claimed job's worker has not shown for `idle_ms` (see `reclaim`)."""
        return bool(await self.redis.xpending_range(self.key, GROUP, min="-", max="+", count=1, idle=idle_ms))

    async def _jobs(self, entries: Sequence[tuple[Any, Any]]) -> list[Job]:
        """The jobs claimed, no longer counted as waiting in their scopes (`release`)."""
        jobs = []
        for entry_id, fields in entries:
            job_id = decode(entry_id)
            try:
                jobs.append(Job.from_fields(job_id, fields))
            except (KeyError, ValueError):  # not a job of ours: nothing to run
                await self.done(job_id)
        await self._release_claimed(jobs)
        return jobs

    async def _release_claimed(self, jobs: Sequence[Job]) -> None:
        """`release` of every job of a claim, in one round trip. A failure is logged, not raised: the jobs are
        claimed and must run; their count lapses at its deadline (`wait_ms`)."""
        members: dict[int, list[str]] = {}
        for job in jobs:
            members.setdefault(job.scope_id, []).append(job.member)
        if not members:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope_id, scope_members in members.items():
                    pipe.zrem(self.keys.queued(scope_id), *scope_members)
                await pipe.execute()
        except (RedisError, OSError) as e:
            logger.warning("claimed runs still count as queued until their deadline (%s)", e)

    async def hand_back(self, consumer: str, job_id: str) -> None:
        """Leave a job `consumer` holds to the next worker that looks for jobs of dead workers (`reclaim`):
        its run was let go unfinished."""
        await self.redis.xclaim(self.key, GROUP, consumer, 0, [job_id], idle=HANDED_BACK_IDLE_MS, justid=True)

    async def wake(self, wake: str) -> None:
        """End the wait of the claim reading the stream `wake`."""
        await self.redis.xadd(wake, {"wake": "1"}, maxlen=1, approximate=False)

    async def done(self, *job_ids: str) -> None:
        """Acknowledge and delete jobs whose runs are over (or were never to run)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.key, GROUP, *job_ids)
            pipe.xdel(self.key, *job_ids)
            await pipe.execute()
