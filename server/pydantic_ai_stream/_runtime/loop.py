"""`run`: drive a pydantic-ai agent over a session, streaming its events (the run loop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pydantic_ai import Agent, RunCancelled
from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import ModelMessage, UserContent
from pydantic_ai.tools import DeferredToolRequests

from .._core.deferred import closing_unanswered, input_calls, unanswered
from .._core.errors import AgxCanceledError, LeaseLostError
from .._core.messages import decode_messages
from .._core.names import EVENT, ORIGIN_PYDANTIC_AI, ORIGIN_STREAM
from .._durable.checkpoint import (
    UNKNOWN_OUTCOME,
    Checkpoint,
    retry_safe_tools,
    saved_by,
    saved_nodes,
    without_run,
)
from .._store.sessions import Session
from .._write.live import LiveRun
from .deps import Deps

__all__ = ["drive", "opened_run", "run", "start_run"]

logger = logging.getLogger(__name__)


async def run(session: Session, agent: AbstractAgent[Any, Any], user_prompt: str, deps: Deps, **kwargs: Any) -> None:
    """Run `agent` on `user_prompt` in `session`, streaming its events to the session's stream.

    Takes the session's live flag (`SessionBusyError` if taken), loads the session, drives
    `agent.iter()`, saves the conversation and writes `end`. On a cancel from any process it stops at
    once, saves the partial conversation, writes `error` `{"msg": "canceled"}` and raises
    `AgxCanceledError`; on a crash it writes `error` and re-raises. `kwargs` go to `agent.iter()`.
    """
    async with opened_run(deps, {"user_prompt": user_prompt}):
        await drive(session, agent, user_prompt, deps, **kwargs)


async def start_run(
    session: Session, agent: AbstractAgent[Any, Any], user_prompt: str, deps: Deps, **kwargs: Any
) -> asyncio.Task[None]:
    """Like `run`, but return once the session is taken and `begin` written, with the rest in a task that
    the deps' runtime owns (its `aclose` cancels and awaits it).

    `SessionBusyError` (and bad ids) are raised here; the task ends as `run` would.
    """
    opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def whole() -> None:  # opened and ended in one task, which a cancel before its start leaves unopened
        async with opened_run(deps, {"user_prompt": user_prompt}):
            opened.set_result(None)
            await drive(session, agent, user_prompt, deps, **kwargs)

    task = deps.get_runtime().start_task(whole())
    try:
        await asyncio.wait([task, opened], return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if not opened.done():
        await task  # it could not open the run: its error is the caller's
    return task


@contextlib.asynccontextmanager
async def opened_run(deps: Deps, body: Mapping[str, Any]) -> AsyncIterator[LiveRun]:
    """A run of `deps`' session opened on its runtime (`Runtime.open_run`, with `body` in its `begin`) and
    bound to `deps` for the block, which ends it."""
    requested = deps.requested_run_id()
    async with deps.get_runtime().open_run(deps.keys(), run_id=requested, body=body) as live:
        deps.attach(live, generated=requested is None)
        try:
            yield live
        finally:
            deps.detach()


async def drive(
    session: Session,
    agent: AbstractAgent[Any, Any],
    user_prompt: str | Sequence[UserContent],
    deps: Deps,
    **kwargs: Any,
) -> None:
    """The rest of `run` once `deps` is bound to the run (`opened_run`, `start()`, or a worker's adopted run);
    the run's owner ends it. `user_prompt`: its text, or its parts (text, then attachments).

    A durable run (one from the run queue) is checkpointed as it goes; resumed by another worker, it goes
    on from its last checkpoint (see `_resume`).
    """
    live = deps.live_run
    before: list[ModelMessage] = []  # the run's messages from its earlier attempts (its last checkpoint)
    try:
        await session.load()
        history = list(session.msgs)
        # A run going on after a wait for input: its earlier part's messages are in `history`, before `waited`.
        wait = await live.lease.stream.load_input(live.run_id) if live is not None and live.continues else None
        own = history[wait.waited :] if wait is not None else history
        prompt: str | Sequence[UserContent] | None = user_prompt
        if live is not None and live.attempt > 1 and saved_by(own, live.run_id):
            # Its last worker saved the conversation and stopped before `end`: only `end` is left, after the
            # nodes that the `resumed` marker replaced for listeners; or the wait for input it stopped on.
            await _replay_saved(live, own, first=0 if wait is None else wait.idx + 1)
            if not (live.durable and unanswered(own)[1]):
                return
            prompt, wait = None, None  # pydantic-ai finds the same deferred calls again, running nothing
            resumed = None
        else:
            resumed = await _resume(live) if live is not None else None
        if resumed is not None:
            prompt, before = None, resumed.messages
            if live is not None and live.token.cancelled:  # cancelled while its worker was gone: it ends here
                before = resumed.closed()
                raise RunCancelled("canceled")
            kwargs.setdefault("deferred_tool_results", resumed.tool_results(agent))
        elif wait is not None and live is not None:
            # Answered: it goes on from them. Retaken from a worker that died, an approved tool may have run.
            if live.attempt > 1:  # before its first checkpoint: the `resumed` marker hid every node from listeners
                await _replay_saved(live, history[: wait.waited])  # streamed again, complete, before the returns
            prompt, live.mapper.idx = None, wait.idx
            unknown = UNKNOWN_OUTCOME if live.attempt > 1 else None
            kwargs.setdefault("deferred_tool_results", wait.results(unknown=unknown, rerun=retry_safe_tools(agent)))
        elif prompt is not None and "deferred_tool_results" not in kwargs and unanswered(history)[1]:
            # Left by a run that waited for input and was cancelled: dropped if it was rolled back, else closed.
            rolled_back = await live.lease.stream.rolled_back_wait() if live is not None else None
            if rolled_back is not None:
                history = session.msgs = without_run(history, rolled_back)
            before = closing_unanswered(history)
        kwargs.setdefault("conversation_id", deps.session_id)
        # pydantic-ai's run id is unique per attempt: a resumed run's history holds its earlier attempts'; and
        # per part, after a wait for input (its earlier part's messages are in the history too).
        part = f":w{wait.waited}" if wait is not None else ""
        kwargs.setdefault("run_id", f"{live.lease_id}{part}" if live is not None else deps.run_id)
        async with agent.iter(
            prompt,
            deps=deps,
            message_history=[*history, *before],
            cancellation_token=deps.cancellation_token,
            **kwargs,
        ) as agent_run:
            tools_ran = False
            async for node in agent_run:
                if Agent.is_model_request_node(node):
                    if tools_ran and live is not None and live.durable:
                        # The previous node's tool returns are in: resume with this request.
                        await live.checkpoint(live.mapper.idx + 1, [*before, *agent_run.new_messages(), node.request])
                    await deps.add_node_begin(node)
                    async with node.stream(agent_run.ctx) as model_events:
                        async for event in model_events:
                            await deps.add_node_event(event)
                    await deps.add_node_end()
                elif Agent.is_call_tools_node(node):
                    # Not the response a run goes on from after a wait: it is in the stored conversation.
                    new = [*before, *agent_run.new_messages()]
                    if node.model_response.tool_calls and live is not None and live.durable and new:
                        # The response is in: resume with its tool calls.
                        await live.checkpoint(live.mapper.idx, new)
                    async with node.stream(agent_run.ctx) as tool_events:
                        async for event in tool_events:
                            await deps.add_node_event(event)
                    tools_ran = True
        new = [*before, *agent_run.new_messages()]
        output = agent_run.result.output if agent_run.result is not None else None
        if isinstance(output, DeferredToolRequests) and live is not None:
            deadline_ms = int(time.time() * 1000) + deps.get_runtime().settings.input_wait * 1000
            await live.wait_for_input(input_calls(output), deadline_ms=deadline_ms, waited=len(history) + len(new))
        await _save(session, deps, new)
    except RunCancelled as e:
        save_error = await _end_cancelled(session, deps, [*before, *e.new_messages()])
        if deps.lease_lost:  # stopped through its token by the lease keeper: nobody asked for a cancel
            raise AgxCanceledError("lease lost") from LeaseLostError(f"run {deps.run_id} lost its lease")
        raise AgxCanceledError("canceled") from save_error or e
    except asyncio.CancelledError as e:
        if live is None or not live.handing_back:
            # The task running us was cancelled (e.g. shutdown): keep what was done, tell listeners, go on.
            partial = RunCancelled.from_cancellation(e)
            await _end_cancelled(session, deps, None if partial is None else [*before, *partial.new_messages()])
        raise  # handed back: another worker resumes the run, which ends and saves it
    except LeaseLostError:
        raise
    except Exception as e:
        await _add_error(deps, {"msg": f"crashed - {e}"})
        raise


async def _resume(live: LiveRun) -> Checkpoint | None:
    """Where a resumed run goes on: its last checkpoint, or `None` (a first attempt, or none was taken:
    it starts over). When the run stopped while tools ran, their node is redone from its response,
    re-sent complete here; node numbers go on from the checkpoint's."""
    if live.attempt == 1:
        return None
    loaded = await live.lease.stream.load_checkpoint(live.run_id)
    if loaded is None:
        return None
    idx, items = loaded
    checkpoint = Checkpoint(idx=idx, messages=decode_messages(items))
    live.kept = (idx, len(checkpoint.messages))
    live.mapper.idx = idx - 1
    if (response := checkpoint.interrupted) is not None and not live.token.cancelled:  # not redone: it ends
        for body in live.mapper.replay(idx, response):
            await live.add(EVENT, ORIGIN_PYDANTIC_AI, body)
    return checkpoint


async def _replay_saved(live: LiveRun, history: Sequence[ModelMessage], *, first: int = 0) -> None:
    """A run its last worker saved, then stopped before its `end`: its nodes from the `resumed` marker's
    (which replaced them for listeners) streamed again, complete, from the saved conversation `history`, the
    first one numbered `first` (after a wait for input, the node after the one it waited in)."""
    loaded = await live.lease.stream.load_checkpoint(live.run_id)
    start = loaded[0] if loaded is not None else first
    for idx, (response, answer) in enumerate(saved_nodes(history, live.run_id), start=first):
        if idx >= start:
            for body in live.mapper.replay(idx, response, answer):
                await live.add(EVENT, ORIGIN_PYDANTIC_AI, body)


async def _save(session: Session, deps: Deps, new_messages: Sequence[ModelMessage]) -> None:
    with contextlib.suppress(LeaseLostError):
        await deps.flush()  # a write refused for a lost lease shows here, before anything is saved
    if deps.lease_lost:
        # Another run may own the session now: its history wins.
        logger.warning("run %s lost its lease; its messages are not saved", deps.run_id)
        return
    session.add_msgs(new_messages)
    await session.save()


async def _end_cancelled(session: Session, deps: Deps, partial: Sequence[ModelMessage] | None) -> Exception | None:
    """Save a cancelled run's partial conversation (unless it is rolled back), then tell listeners it was
    cancelled and whether the save failed; a failed save's error is returned, not raised: the cancel is
    how the run ended."""
    save_error = None
    rolled_back = await _rolled_back(deps)
    if partial is not None and not rolled_back:
        try:
            await _save(session, deps, partial)
        except Exception as e:
            logger.warning("run %s was cancelled and its conversation could not be saved: %s", deps.run_id, e)
            save_error = e
    await _add_error(deps, {"msg": "canceled", "rollback": True} if rolled_back else {"msg": "canceled"})
    if save_error is not None:
        await _add_error(deps, {"msg": f"save failed - {save_error}"})
    return save_error


async def _rolled_back(deps: Deps) -> bool:
    live = deps.live_run
    try:
        return live is not None and await live.rolled_back()
    except Exception as e:  # then the conversation is saved, as for any cancel (or its save fails too)
        logger.warning("run %s could not tell whether it was rolled back: %s", deps.run_id, e)
        return False


async def _add_error(deps: Deps, body: dict[str, Any]) -> None:
    try:
        await deps.add_error(body, origin=ORIGIN_STREAM)
    except LeaseLostError:
        logger.warning("run %s lost its lease before it could report %s", deps.run_id, body)
