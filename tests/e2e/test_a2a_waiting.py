"""A run that waits for input over A2A, with the SDK's own gRPC client against a real server on a real Redis: the
task is INPUT_REQUIRED with its calls in a data part, and a follow-up message's data part answers it
(docs/waiting-runs.md, README "A2A")."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from a2a.client import A2AClientError, Client
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidParamsError, TaskNotFoundError
from google.protobuf import json_format, struct_pb2
from grpc_agents import OPS_DROPS
from test_a2a import Conversation, _a2a, _auth, _message
from test_a2a_http import _http_a2a

from pydantic_ai_stream import Settings
from pydantic_ai_stream.client import StreamClient
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb

WITHIN = 20.0
"""Seconds a step may take on a loaded 2-core machine."""
WAITING = ["TASK_STATE_SUBMITTED", "TASK_STATE_WORKING", "TASK_STATE_INPUT_REQUIRED"]
GOING_ON = ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"]


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    config = ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"ops": "grpc_agents:ops"},
        tokens=["alice-token=1:1"],
        heartbeat_interval=0.3,
        shutdown_grace=0.5,
        a2a=True,
        http_port=0,
    )
    async with running_server(config, settings=settings) as running:
        yield running


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[Client]:
    async with _a2a(server, agent="ops") as (sdk_client, _):
        yield sdk_client


def _answers(task_id: str, *answers: dict[str, Any], parts: list[a2a.Part] | None = None) -> a2a.SendMessageRequest:
    """A follow-up message on `task_id` whose one data part holds `answers`."""
    data = struct_pb2.Value()
    json_format.ParseDict({"answers": list(answers)}, data)
    message = a2a.Message(message_id="answers", role=a2a.ROLE_USER, task_id=task_id)
    message.parts.extend(parts if parts is not None else [a2a.Part(data=data, media_type="application/json")])
    return a2a.SendMessageRequest(message=message)


async def _send(client: Client, request: a2a.SendMessageRequest, conversation: Conversation) -> a2a.StreamResponse:
    """Stream `request`'s replies into `conversation`; the last reply."""
    last = a2a.StreamResponse()
    async with asyncio.timeout(WITHIN):
        async for response in client.send_message(request, context=_auth("alice-token")):
            conversation.apply(response)
            last = response
    return last


def _calls(status: a2a.TaskStatus) -> dict[str, Any]:
    [data] = [json_format.MessageToDict(part.data) for part in status.message.parts if part.HasField("data")]
    assert isinstance(data, dict)
    return data


async def _waiting(client: Client, context_id: str) -> tuple[Conversation, a2a.TaskStatus]:
    """Start the ops run: its stream ends with the task INPUT_REQUIRED, which GetTask says too."""
    conversation = Conversation()
    last = await _send(client, _message("clean up", context_id=context_id), conversation)
    assert list(dict.fromkeys(conversation.states)) == WAITING
    assert last.HasField("status_update")
    task = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_INPUT_REQUIRED
    assert _calls(task.status) == _calls(last.status_update.status)
    return conversation, task.status


async def _our_events(server: RunningServer, session_id: str) -> list[pb.Event]:
    async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as ours:
        return [event async for event in ours.listen(session_id)]


async def test_an_approval_and_an_external_value_continue_the_task(server: RunningServer, client: Client) -> None:
    OPS_DROPS.clear()
    first, status = await _waiting(client, "w1")
    data = _calls(status)
    assert data["calls"] == [
        {"tool_call_id": "c1", "tool_name": "drop_db", "args": {"name": "staging"}, "kind": "approval"},
        {"tool_call_id": "c2", "tool_name": "page", "args": {"msg": "db"}, "kind": "external"},
    ]
    assert data["deadline_ms"] > 0
    assert "approval of drop_db (c1)" in status.message.parts[0].text
    held = Conversation()
    await _send(client, _answers(first.task_id, {"tool_call_id": "c1", "approved": True}), held)
    assert held.states == ["TASK_STATE_INPUT_REQUIRED"], "held: c2 has no answer yet"
    task = await client.get_task(a2a.GetTaskRequest(id=first.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_INPUT_REQUIRED
    going_on = Conversation()
    await _send(client, _answers(first.task_id, {"tool_call_id": "c2", "value": {"ack": True}}), going_on)
    assert list(dict.fromkeys(going_on.states)) == GOING_ON
    assert going_on.task_id == first.task_id
    assert going_on.text == "done: drop_db=dropped staging; page={'ack': True}"
    assert OPS_DROPS == ["staging"], "the approved tool ran once"
    task = await client.get_task(a2a.GetTaskRequest(id=first.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    # A retried answer: the task as it is, nothing runs again.
    again = Conversation()
    await _send(client, _answers(first.task_id, {"tool_call_id": "c2", "value": {"ack": True}}), again)
    assert again.states == ["TASK_STATE_COMPLETED"]
    assert again.text == going_on.text
    assert OPS_DROPS == ["staging"]
    events = await _our_events(server, "w1")
    assert [e.kind for e in events].count(pb.EVENT_KIND_INPUT_REQUIRED) == 1, "one run, one wait, in one stream"


async def test_a_denial_and_a_retry_reach_the_model_through_a_blocking_send(
    server: RunningServer, client: Client
) -> None:
    OPS_DROPS.clear()
    first, _ = await _waiting(client, "w2")
    request = _answers(
        first.task_id, {"tool_call_id": "c1", "denied": "not on Fridays"}, {"tool_call_id": "c2", "retry": "pager down"}
    )
    async with _a2a(server, agent="ops", streaming=False) as (blocking, _):
        [response] = [r async for r in blocking.send_message(request, context=_auth("alice-token"))]
    task = response.task
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    text = "".join(p.text for a in task.artifacts for p in a.parts)
    assert "not on Fridays" in text
    assert "pager down" in text
    assert OPS_DROPS == []


async def test_bad_answers_are_invalid_params_and_write_nothing(server: RunningServer, client: Client) -> None:
    OPS_DROPS.clear()
    first, _ = await _waiting(client, "w3")
    bad = [
        _answers(first.task_id, {"tool_call_id": "nope", "approved": True}),  # not a call of the run
        _answers(first.task_id, {"tool_call_id": "c2", "approved": True}),  # an approval for an external call
        _answers(first.task_id, {"tool_call_id": "c1", "approved": "yes"}),
        _answers(first.task_id, {"tool_call_id": "c1", "approved": True, "value": 1}),
        _answers(first.task_id),
        _answers(first.task_id, parts=[a2a.Part(text="yes, go ahead")]),  # text only on a waiting task
    ]
    for request in bad:
        with pytest.raises(InvalidParamsError):
            await _send(client, request, Conversation())
    with pytest.raises(InvalidParamsError, match="waits for answers to its tool calls"):
        await _send(client, bad[-1], Conversation())
    with pytest.raises(TaskNotFoundError):
        await _send(client, _answers("no-such-task", {"tool_call_id": "c1", "approved": True}), Conversation())
    task = await client.get_task(a2a.GetTaskRequest(id=first.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_INPUT_REQUIRED, "nothing was written"
    both = _answers(first.task_id, {"tool_call_id": "c1", "approved": True}, {"tool_call_id": "c2", "value": 1})
    going_on = Conversation()
    await _send(client, both, going_on)
    assert going_on.states[-1] == "TASK_STATE_COMPLETED"
    assert OPS_DROPS == ["staging"]


async def test_a_subscriber_to_a_waiting_task_sees_it_go_on(client: Client) -> None:
    """SubscribeToTask on a waiting task: the task INPUT_REQUIRED, then (answered by another message) the run's
    events to its end."""
    first, _ = await _waiting(client, "w4")
    watched, subscribed = Conversation(), asyncio.Event()

    async def watch() -> None:
        subscribe = a2a.SubscribeToTaskRequest(id=first.task_id)
        async for response in client.subscribe(subscribe, context=_auth("alice-token")):
            watched.apply(response)
            subscribed.set()

    async with asyncio.timeout(WITHIN), asyncio.TaskGroup() as group:
        group.create_task(watch())
        await subscribed.wait()
        both = _answers(first.task_id, {"tool_call_id": "c1", "denied": "no"}, {"tool_call_id": "c2", "value": 1})
        await _send(client, both, Conversation())
    assert watched.states[0] == "TASK_STATE_INPUT_REQUIRED"
    assert watched.states[-1] == "TASK_STATE_COMPLETED"
    assert "TASK_STATE_WORKING" in watched.states
    assert watched.text.startswith("done: ")


async def test_cancel_ends_a_waiting_task(client: Client) -> None:
    first, _ = await _waiting(client, "w5")
    task = await client.cancel_task(a2a.CancelTaskRequest(id=first.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_CANCELED
    with pytest.raises(A2AClientError, match="FAILED_PRECONDITION"):
        await _send(client, _answers(first.task_id, {"tool_call_id": "c1", "approved": True}), Conversation())


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_the_same_flow_over_http(server: RunningServer, binding: str) -> None:
    """JSON-RPC and REST carry the data parts both ways: the calls out, the answers in."""
    OPS_DROPS.clear()
    async with _http_a2a(server, "ops", binding) as (client, _):
        first, status = await _waiting(client, f"h-{binding}")
        assert [c["tool_call_id"] for c in _calls(status)["calls"]] == ["c1", "c2"]
        with pytest.raises(InvalidParamsError):
            await _send(client, _answers(first.task_id, {"tool_call_id": "c2", "approved": True}), Conversation())
        going_on = Conversation()
        both = _answers(first.task_id, {"tool_call_id": "c1", "approved": True}, {"tool_call_id": "c2", "value": 1})
        await _send(client, both, going_on)
    assert list(dict.fromkeys(going_on.states)) == GOING_ON
    assert going_on.text == "done: drop_db=dropped staging; page=1.0"
    assert OPS_DROPS == ["staging"]
