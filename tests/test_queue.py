"""`RunQueue`: runs accepted once, bounded per scope, claimed by one worker each, safe to re-send."""

from __future__ import annotations

import json

import pytest
from redis.asyncio import Redis

from pydantic_ai_stream import Attachment, QueueFullError, RunExistsError, Runtime, SessionBusyError, Settings
from pydantic_ai_stream._core.inputs import encode_attachments
from pydantic_ai_stream._core.keys import queue_wake_key
from pydantic_ai_stream._core.submission import Submission
from pydantic_ai_stream._durable.job import Job
from pydantic_ai_stream._durable.queue import GROUP, RunQueue
from pydantic_ai_stream._store.stream import SessionStream


def _stream(runtime: Runtime, session_id: str, user_id: int = 1) -> SessionStream:
    return runtime.stream(runtime.keys(scope_id=1, user_id=user_id, session_id=session_id))


async def _submit(queue: RunQueue, stream: SessionStream, run_id: str | None = None) -> str:
    submitted = await queue.submit(stream, Submission(agent="a", body={"user_prompt": "hi"}, run_id=run_id))
    return submitted.run_id


async def test_a_submitted_run_is_queued_with_its_begin_and_claimed_once(redis: Redis, runtime: Runtime) -> None:
    queue = runtime.queue
    stream = _stream(runtime, "s1")
    submitted = await queue.submit(
        stream, Submission(agent="a", body={"user_prompt": "hi"}, options={"model_settings": {"seed": 1}})
    )
    [(entry_id, fields)] = await redis.xrange(stream.keys.stream)
    assert entry_id.decode() == submitted.begin_event_id
    assert fields[b"type"] == b"begin"
    assert await redis.get(stream.keys.live) == f"queued:{submitted.run_id}".encode()
    assert await queue.depth(1) == 1
    w1, w2 = (queue_wake_key(runtime.settings.redis_prefix, name) for name in ("w1", "w2"))
    await queue.create_group(wake=w1)
    await queue.create_group(wake=w1)  # again: nothing changes
    await queue.create_group(wake=w2)
    [job] = await queue.claim(client=redis, consumer="w1", count=10, block_ms=1, wake=w1)
    assert (job.session_id, job.run_id, job.agent, dict(job.options)) == (
        "s1", submitted.run_id, "a", {"model_settings": {"seed": 1}},
    )  # fmt: skip
    assert await queue.claim(client=redis, consumer="w2", count=10, block_ms=1, wake=w2) == [], "claimed once"
    await queue.wake(w2)
    assert await queue.claim(client=redis, consumer="w2", count=10, block_ms=10_000, wake=w2) == [], "woken, no job"
    await queue.release(job.scope_id, job.member)
    assert await queue.depth(1) == 0
    await queue.done(job.id)
    assert await redis.xlen(queue.key) == 0
    assert await redis.xpending(queue.key, GROUP) == {"pending": 0, "min": None, "max": None, "consumers": []}


async def test_a_retried_submit_runs_nothing_twice(redis: Redis, runtime: Runtime) -> None:
    queue = runtime.queue
    stream = _stream(runtime, "s1")
    run_id = await _submit(queue, stream, run_id="r1")
    with pytest.raises(RunExistsError) as retried:
        await _submit(queue, stream, run_id="r1")
    assert retried.value.run_id == "r1"
    # The job went in with the run's open, in one script: a retry adds none.
    assert await queue.waiting() == 1
    assert await queue.depth(1) == 1, "counted once"
    assert await redis.xlen(stream.keys.stream) == 1, "one begin"
    with pytest.raises(SessionBusyError) as busy:
        await _submit(queue, stream)
    assert not isinstance(busy.value, RunExistsError)
    assert await queue.depth(1) == 1, "a refused run is not counted"
    assert run_id == "r1"


async def test_a_full_scope_refuses_runs_and_writes_nothing(redis: Redis, settings: Settings) -> None:
    settings.max_queued_runs = 2
    async with Runtime(redis=redis, settings=settings) as runtime:
        queue = runtime.queue
        await _submit(queue, _stream(runtime, "s1"))
        await _submit(queue, _stream(runtime, "s2"))
        full = _stream(runtime, "s3")
        with pytest.raises(QueueFullError):
            await _submit(queue, full)
        assert not await redis.exists(full.keys.stream, full.keys.live)
        other_scope = runtime.stream(runtime.keys(scope_id=2, user_id=1, session_id="s3"))
        await queue.submit(other_scope, Submission(agent="a"))  # each scope has its own bound
        assert (await queue.depth(1), await queue.depth(2)) == (2, 1)


async def test_claims_take_turns_between_scopes_and_waiting_counts_every_scope(redis: Redis, runtime: Runtime) -> None:
    """Scope 1's backlog is claimed one job per turn of each scope with jobs: scope 2's run, submitted after
    it, is the second claimed, not the 21st."""
    queue = runtime.queue
    for i in range(20):
        await _submit(queue, _stream(runtime, f"a{i}"))
    for i in range(2):
        other = runtime.stream(runtime.keys(scope_id=2, user_id=1, session_id=f"b{i}"))
        await queue.submit(other, Submission(agent="a"))
    assert (await queue.waiting(), await queue.depth(1), await queue.depth(2)) == (22, 20, 2)
    wake = queue_wake_key(runtime.settings.redis_prefix, "w1")
    await queue.create_group(wake=wake)
    claimed = []
    for _ in range(5):
        [job] = await queue.claim(client=redis, consumer="w1", count=1, block_ms=1, wake=wake)
        claimed.append((job.scope_id, job.session_id))
    assert claimed == [(1, "a0"), (2, "b0"), (1, "a1"), (2, "b1"), (1, "a2")]
    jobs = await queue.claim(client=redis, consumer="w1", count=10, block_ms=1, wake=wake)
    assert [job.session_id for job in jobs] == [f"a{i}" for i in range(3, 13)], "one scope left: its jobs in order"
    assert await queue.waiting() == 7, "claimed jobs wait no more"


async def test_a_job_in_the_queue_of_an_older_version_is_claimed_first(redis: Redis, runtime: Runtime) -> None:
    """A job an older version added to the queue's one stream (before scopes took turns) is still claimed."""
    queue = runtime.queue
    await _submit(queue, _stream(runtime, "new"))
    wake = queue_wake_key(runtime.settings.redis_prefix, "w1")
    await queue.create_group(wake=wake)
    old = Job(scope_id=1, user_id=1, session_id="old", run_id="r1", agent="a")
    await redis.xadd(queue.key, old.fields())  # type: ignore[arg-type]
    assert await queue.waiting() == 2
    jobs = await queue.claim(client=redis, consumer="w1", count=10, block_ms=1, wake=wake)
    assert [job.session_id for job in jobs] == ["old", "new"]
    assert await queue.waiting() == 0


async def test_a_runs_context_rides_its_job_and_its_attachments_are_kept_once_apart(
    redis: Redis, runtime: Runtime
) -> None:
    """A retry keeps the first copy; a run refused (full, busy) leaves none; one waiting behind the session's run
    keeps its own as long as it waits (`keep_waiting`), and its waiting entry carries its context."""
    queue = runtime.queue
    stream = _stream(runtime, "s1")
    image = Attachment(data=b"\x89PNG", media_type="image/png", kind="image")
    run = Submission(agent="a", body={"user_prompt": "hi"}, run_id="r1", context={"k": "v"}, attachments=[image])
    await queue.submit(stream, run)
    assert await redis.get(stream.keys.attachments("r1")) == encode_attachments([image])
    with pytest.raises(RunExistsError):
        await queue.submit(stream, run)
    assert await redis.get(stream.keys.attachments("r1")) == encode_attachments([image]), "kept once"
    with pytest.raises(SessionBusyError):
        await queue.submit(stream, Submission(agent="a", run_id="r2", attachments=[image]))
    assert not await redis.exists(stream.keys.attachments("r2")), "a refused run's go"
    waiting = Submission(agent="a", run_id="w1", context={"k": "w"}, attachments=[image])
    assert (await queue.wait_behind(stream, waiting)) is not None
    await redis.pexpire(stream.keys.attachments("w1"), 1000)
    await queue.keep_waiting([(stream.keys, "w1")])
    assert await redis.pttl(stream.keys.attachments("w1")) > 1000, "kept as long as the run waits"
    [item] = await redis.lrange(stream.keys.waiting, 0, -1)
    assert Submission.of_waiting(json.loads(item)).context == {"k": "w"}
    w1 = queue_wake_key(runtime.settings.redis_prefix, "w1")
    await queue.create_group(wake=w1)
    [job] = await queue.claim(client=redis, consumer="w1", count=10, block_ms=1, wake=w1)
    assert (job.run_id, dict(job.context)) == ("r1", {"k": "v"})
