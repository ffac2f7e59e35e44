"""A2A end to end: the a2a SDK's own gRPC client against real servers (two replicas) on one real Redis."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest
from a2a.client import A2AClientError, Client, ClientCallContext, ClientConfig, ClientFactory, minimal_agent_card
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import (
    ContentTypeNotSupportedError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from examples.a2a_client import converse
from grpc_agents import PACED_TOKENS, paced
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from test_grpc_process import worker_process

from pydantic_ai_stream import Settings, Telemetry
from pydantic_ai_stream.client import StreamClient, Transcript
from pydantic_ai_stream.server import RunningServer, ServerSettings, Worker, running_server
from pydantic_ai_stream.v1 import stream_pb2 as pb

TOKENS = ["alice-token=1:1", "bob-token=1:2", "carol-token=1:3:weather", "alice-weather-token=1:1:weather"]


def _config(redis_url: str) -> ServerSettings:
    return ServerSettings(
        redis_url=redis_url,
        port=0,
        agents={"weather": "grpc_agents:weather", "stalling": "grpc_agents:stalling"},
        tokens=TOKENS,
        shutdown_grace=0.5,
        heartbeat_interval=0.3,
        a2a=True,
    )


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(_config(redis_url), settings=settings) as running:
        yield running


@pytest.fixture
async def replica(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    """A second server on the same Redis that executes no runs: it only reads what the first one writes."""
    config = _config(redis_url).model_copy(update={"concurrency": 0})
    async with running_server(config, settings=settings) as running:
        yield running


def _auth(token: str) -> ClientCallContext:
    return ClientCallContext(service_parameters={"authorization": f"Bearer {token}"}, timeout=30)


@contextlib.asynccontextmanager
async def _a2a(
    server: RunningServer, token: str = "alice-token", agent: str = "demo", *, streaming: bool = True
) -> AsyncIterator[tuple[Client, a2a.AgentCard]]:
    """The SDK's client for `agent`, made from the card the server gives over gRPC (GetExtendedAgentCard)."""
    factory = ClientFactory(
        ClientConfig(
            streaming=streaming, supported_protocol_bindings=["GRPC"], grpc_channel_factory=grpc.aio.insecure_channel
        )
    )
    bootstrap = factory.create(minimal_agent_card(f"127.0.0.1:{server.port}", ["GRPC"]))
    try:
        request = a2a.GetExtendedAgentCardRequest(tenant=agent)
        card = await bootstrap.get_extended_agent_card(request, context=_auth(token))
    finally:
        await bootstrap.close()
    client = factory.create(card)
    try:
        yield client, card
    finally:
        await client.close()


def _message(text: str, context_id: str = "") -> a2a.SendMessageRequest:
    message = a2a.Message(message_id="m-" + text[:8].replace(" ", "-"), role=a2a.ROLE_USER, context_id=context_id)
    message.parts.append(a2a.Part(text=text))
    return a2a.SendMessageRequest(message=message)


@dataclass
class Conversation:
    """What an A2A client shows: task states in order and the artifact text (chunks appended, or replaced)."""

    task_id: str = ""
    context_id: str = ""
    states: list[str] = field(default_factory=list)
    text: str = ""
    last_chunk: bool = False

    def completed_in_order(self) -> bool:
        """Whether the task went SUBMITTED, WORKING, COMPLETED (a loaded machine may repeat WORKING: a heartbeat
        after 0.3 s of silence)."""
        return list(dict.fromkeys(self.states)) == [
            "TASK_STATE_SUBMITTED",
            "TASK_STATE_WORKING",
            "TASK_STATE_COMPLETED",
        ]

    def apply(self, response: a2a.StreamResponse) -> None:
        if response.HasField("task"):
            self.task_id, self.context_id = response.task.id, response.task.context_id
            self.states.append(a2a.TaskState.Name(response.task.status.state))
            self.text = "".join(p.text for a in response.task.artifacts for p in a.parts)
        elif response.HasField("status_update"):
            self.states.append(a2a.TaskState.Name(response.status_update.status.state))
        elif response.HasField("artifact_update"):
            update = response.artifact_update
            chunk = "".join(p.text for p in update.artifact.parts)
            self.text = self.text + chunk if update.append else chunk
            self.last_chunk = update.last_chunk


async def _our_answer(server: RunningServer, session_id: str, token: str = "alice-token") -> tuple[str, list[pb.Event]]:
    """The run's text and events as our own Listen gives them."""
    transcript, events = Transcript(), []
    async with StreamClient(f"127.0.0.1:{server.port}", token=token) as client:
        async for event in client.listen(session_id):
            transcript.apply(event)
            events.append(event)
    return transcript.text(), events


async def test_a_streamed_demo_run_reaches_the_sdk_client_as_states_and_text(server: RunningServer) -> None:
    conversation = Conversation()
    async with _a2a(server) as (client, card):
        assert card.name == "demo"
        assert card.capabilities.streaming
        assert card.supported_interfaces[0].tenant == "demo"
        async for response in client.send_message(_message("hello there, agent"), context=_auth("alice-token")):
            conversation.apply(response)
    assert conversation.completed_in_order()
    assert conversation.last_chunk
    answer, _ = await _our_answer(server, conversation.context_id)
    assert conversation.text == answer
    assert answer.startswith("You said 3 words at ")


async def test_a_non_streaming_send_returns_the_completed_task(server: RunningServer) -> None:
    async with _a2a(server, agent="weather", streaming=False) as (client, _):
        responses = [r async for r in client.send_message(_message("weather in Paris?"), context=_auth("alice-token"))]
    (response,) = responses
    task = response.task
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for a in task.artifacts for p in a.parts] == ["It is sunny."]
    assert task.history[0].parts[0].text == "weather in Paris?"


async def test_cancel_mid_run_ends_the_task_canceled_and_our_stream(server: RunningServer) -> None:
    conversation = Conversation()
    async with _a2a(server) as (client, _):
        async for response in client.send_message(_message("cancel me soon"), context=_auth("alice-token")):
            conversation.apply(response)
            if response.HasField("artifact_update"):
                request = a2a.CancelTaskRequest(id=conversation.task_id)
                task = await client.cancel_task(request, context=_auth("alice-token"))
                assert task.status.state == a2a.TASK_STATE_CANCELED
                break
        stored = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=_auth("alice-token"))
        assert stored.status.state == a2a.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError, match="already ended"):
            await client.cancel_task(a2a.CancelTaskRequest(id=conversation.task_id), context=_auth("alice-token"))
    _, events = await _our_answer(server, conversation.context_id)
    assert events[-1].type == pb.EVENT_TYPE_END
    assert any(e.type == pb.EVENT_TYPE_ERROR for e in events)


async def test_subscribing_on_a_second_replica_mid_run_gets_the_whole_text(
    server: RunningServer, replica: RunningServer
) -> None:
    first = Conversation()
    async with _a2a(server) as (client, _):
        async for response in client.send_message(_message("one two three four"), context=_auth("alice-token")):
            first.apply(response)
            if response.HasField("artifact_update"):
                break  # the client goes away mid-answer
    assert first.text
    assert first.states[-1] == "TASK_STATE_WORKING"
    second = Conversation()
    async with _a2a(replica) as (client, _):
        before = await client.get_task(a2a.GetTaskRequest(id=first.task_id), context=_auth("alice-token"))
        assert before.status.state == a2a.TASK_STATE_WORKING  # mid-run
        subscribe = a2a.SubscribeToTaskRequest(id=first.task_id)
        async for response in client.subscribe(subscribe, context=_auth("alice-token")):
            second.apply(response)
        task = await client.get_task(a2a.GetTaskRequest(id=first.task_id), context=_auth("alice-token"))
    assert second.states[0] == "TASK_STATE_WORKING"  # the task's current state first, as GetTask said
    answer, _ = await _our_answer(server, first.context_id)
    assert second.text == answer  # nothing lost, nothing twice
    assert second.text.startswith(first.text)
    assert second.states[-1] == "TASK_STATE_COMPLETED"
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for a in task.artifacts for p in a.parts] == [answer]


async def test_another_user_never_reaches_a_task(server: RunningServer) -> None:
    conversation = Conversation()
    async with _a2a(server, agent="weather") as (client, _):
        async for response in client.send_message(_message("weather?"), context=_auth("alice-token")):
            conversation.apply(response)
        bob = _auth("bob-token")
        with pytest.raises(TaskNotFoundError):
            await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=bob)
        with pytest.raises(TaskNotFoundError):
            await client.cancel_task(a2a.CancelTaskRequest(id=conversation.task_id), context=bob)
        with pytest.raises(TaskNotFoundError):
            async for _ in client.subscribe(a2a.SubscribeToTaskRequest(id=conversation.task_id), context=bob):
                pass
        listed = await client.list_tasks(a2a.ListTasksRequest(), context=bob)
        assert list(listed.tasks) == []
        with pytest.raises(A2AClientError, match="UNAUTHENTICATED"):
            await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=_auth("nobody"))
        with pytest.raises(A2AClientError, match="UNAUTHENTICATED"):
            async for _ in client.send_message(_message("hi"), context=ClientCallContext()):
                pass


async def test_tenants_are_agents(server: RunningServer) -> None:
    async with _a2a(server, agent="weather") as (client, _):
        request = _message("hi")
        request.tenant = "nosuch"
        with pytest.raises(A2AClientError, match="NOT_FOUND"):
            async for _ in client.send_message(request, context=_auth("alice-token")):
                pass
        with pytest.raises(A2AClientError, match="PERMISSION_DENIED"):
            await client.get_extended_agent_card(
                a2a.GetExtendedAgentCardRequest(tenant="demo"), context=_auth("carol-token")
            )


async def test_get_and_list_tasks_read_our_runs(server: RunningServer) -> None:
    ids = []
    async with _a2a(server, agent="weather") as (client, _):
        for text in ("first", "second"):
            conversation = Conversation()
            async for response in client.send_message(_message(text, context_id="talk"), context=_auth("alice-token")):
                conversation.apply(response)
            ids.append(conversation.task_id)
            assert conversation.context_id == "talk"
        task = await client.get_task(a2a.GetTaskRequest(id=ids[0]), context=_auth("alice-token"))
        assert (task.id, task.context_id, task.status.state) == (ids[0], "talk", a2a.TASK_STATE_COMPLETED)
        assert [p.text for a in task.artifacts for p in a.parts] == ["It is sunny."]
        listed = await client.list_tasks(a2a.ListTasksRequest(include_artifacts=True), context=_auth("alice-token"))
        assert [t.id for t in listed.tasks] == ids[::-1]
        assert {t.status.state for t in listed.tasks} == {a2a.TASK_STATE_COMPLETED}
        other = await client.list_tasks(a2a.ListTasksRequest(context_id="else"), context=_auth("alice-token"))
        assert list(other.tasks) == []


async def test_the_example_client_prints_the_conversation(
    server: RunningServer, capsys: pytest.CaptureFixture[str]
) -> None:
    text = await converse(f"127.0.0.1:{server.port}", "alice-token", "weather", "weather in Paris?")
    assert text == "It is sunny."
    printed = capsys.readouterr().out
    assert "[card] GRPC at 127.0.0.1:" in printed
    assert "TASK_STATE_SUBMITTED" in printed
    assert printed.rstrip().endswith("[status] TASK_STATE_COMPLETED")


async def test_a_silent_run_repeats_its_state_and_cancels(server: RunningServer) -> None:
    """A run that stalls mid-answer: its stream says WORKING again every heartbeat (proxies cut idle streams)
    until the task is cancelled."""
    conversation, cancelled = Conversation(), False
    async with _a2a(server, agent="stalling") as (client, _):
        async for response in client.send_message(_message("go"), context=_auth("alice-token")):
            conversation.apply(response)
            heartbeats = conversation.states.count("TASK_STATE_WORKING") - 1
            if conversation.text == "thinking hard " and heartbeats >= 2 and not cancelled:
                cancelled = True
                task = await client.cancel_task(
                    a2a.CancelTaskRequest(id=conversation.task_id), context=_auth("alice-token")
                )
                assert task.status.state == a2a.TASK_STATE_CANCELED
    assert conversation.states[-1] == "TASK_STATE_CANCELED"
    assert conversation.text == "thinking hard "


async def test_a_task_no_reader_saw_end_keeps_its_outcome_when_its_session_runs_again(server: RunningServer) -> None:
    async with _a2a(server, agent="weather", streaming=False) as (client, _):
        request = _message("first", context_id="again")
        request.configuration.return_immediately = True
        [response] = [r async for r in client.send_message(request, context=_auth("alice-token"))]
        first = response.task
        assert first.status.state == a2a.TASK_STATE_SUBMITTED
        await _our_answer(server, "again")  # the run ended; no A2A reader saw it
        [second] = [r async for r in client.send_message(_message("second", "again"), context=_auth("alice-token"))]
        assert second.task.status.state == a2a.TASK_STATE_COMPLETED
        task = await client.get_task(a2a.GetTaskRequest(id=first.id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for a in task.artifacts for p in a.parts] == ["It is sunny."]


async def test_a2a_on_a_redis_cluster(cluster_url: str, settings: Settings) -> None:
    """Task records are hash-tagged by user: on a real 3-master cluster a task streams, is read and listed."""
    config = _config(cluster_url).model_copy(update={"redis_cluster": True})
    async with running_server(config, settings=settings) as running, _a2a(running, agent="weather") as (client, _):
        conversation = Conversation()
        async for response in client.send_message(_message("weather?"), context=_auth("alice-token")):
            conversation.apply(response)
        assert conversation.text == "It is sunny."
        task = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=_auth("alice-token"))
        assert task.status.state == a2a.TASK_STATE_COMPLETED
        listed = await client.list_tasks(a2a.ListTasksRequest(), context=_auth("alice-token"))
        assert [t.id for t in listed.tasks] == [conversation.task_id]


async def test_a_worker_killed_mid_answer_shows_no_text_twice_over_a2a(redis_url: str) -> None:
    """An API-only replica; the run executes in a worker process that is killed -9 mid-answer, and an
    in-process worker resumes it (a `resumed` marker): the A2A client's artifact ends with the answer once."""
    settings = Settings(redis_prefix=f"t{uuid.uuid4().hex[:12]}", lease_ttl=1.5, lease_renew_interval=0.1)
    config = _config(redis_url).model_copy(update={"concurrency": 0, "agents": {"paced": "grpc_agents:paced"}})
    short_leases = {"PYDANTIC_AI_STREAM_LEASE_TTL": "1.5", "PYDANTIC_AI_STREAM_LEASE_RENEW_INTERVAL": "0.1"}
    conversation, replaced = Conversation(), 0
    agent = ("--agent", "paced=grpc_agents:paced", "--no-demo", "--grace", "0.2")
    async with running_server(config, settings=settings) as api, _a2a(api, agent="paced") as (client, _):
        with worker_process(redis_url, settings.redis_prefix, *agent, env=short_leases) as first:
            responses = client.send_message(_message("go"), context=_auth("alice-token"))
            async for response in responses:
                conversation.apply(response)
                if "t5 " in conversation.text:
                    first.kill()
                    break
            async with Worker(runtime=api.servicer.runtime, agents={"paced": paced}):
                async for response in responses:
                    conversation.apply(response)
                    update = response.artifact_update
                    replaced += response.HasField("artifact_update") and not update.append
    assert replaced == 1, "the resume superseded text the client had: the artifact was sent again once"
    assert conversation.text == "".join(f"t{i} " for i in range(PACED_TOKENS))
    assert conversation.states[-1] == "TASK_STATE_COMPLETED"


async def test_an_a2a_callers_trace_continues_through_the_queue_to_the_run(redis_url: str, settings: Settings) -> None:
    """With telemetry on, a `traceparent` an A2A client sends is the parent of `SendMessage`'s server span,
    whose child is the worker's `run <agent>` span, as for our own `Run`."""
    trace_id, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    spans = InMemorySpanExporter()
    async with (
        Telemetry(span_exporters=[spans]) as telemetry,
        running_server(_config(redis_url), settings=settings, telemetry=telemetry) as server,
    ):
        context = ClientCallContext(
            service_parameters={
                "authorization": "Bearer alice-token",
                "traceparent": f"00-{trace_id}-{caller_span}-01",
            },
            timeout=30,
        )
        async with _a2a(server, agent="weather", streaming=False) as (client, _):
            [response] = [r async for r in client.send_message(_message("weather in Paris?"), context=context)]
        assert response.task.status.state == a2a.TASK_STATE_COMPLETED
        assert server.worker is not None
        await server.worker.join()  # the run span ends when the worker's run does
    [rpc] = [s for s in spans.get_finished_spans() if s.name == "/lf.a2a.v1.A2AService/SendMessage"]
    [run] = [s for s in spans.get_finished_spans() if s.name == "run weather"]
    assert format(rpc.context.trace_id, "032x") == format(run.context.trace_id, "032x") == trace_id
    assert rpc.parent is not None
    assert format(rpc.parent.span_id, "016x") == caller_span
    assert run.parent is not None
    assert run.parent.span_id == rpc.context.span_id
    assert run.attributes is not None
    assert run.attributes["pydantic_ai_stream.run_id"] == response.task.id


async def test_a_task_whose_session_ran_again_through_run_never_shows_the_next_runs_text(
    server: RunningServer,
) -> None:
    """A task nobody read to its end, then a run on its session through our own `Run` (not A2A), which
    replaces the session's stream: the task never shows that run's text as its own, and is not left
    SUBMITTED."""
    async with _a2a(server, agent="weather", streaming=False) as (client, _):
        request = _message("first", context_id="mixed")
        request.configuration.return_immediately = True
        [response] = [r async for r in client.send_message(request, context=_auth("alice-token"))]
        first = response.task
        await _our_answer(server, "mixed")  # the run ended; no A2A reader saw it
        async with StreamClient(f"127.0.0.1:{server.port}", token="alice-token") as ours:
            await ours.run("demo", "mixed", "count these words")
        text, _ = await _our_answer(server, "mixed")
        assert "You said 3 words" in text
        task = await client.get_task(a2a.GetTaskRequest(id=first.id), context=_auth("alice-token"))
    texts = [p.text for a in task.artifacts for p in a.parts]
    assert not any("You said" in text for text in texts), texts
    # Its outcome went with the replaced stream: the task says it ended and why its result is not known,
    # rather than staying SUBMITTED for a poller to wait on for ever.
    assert task.status.state == a2a.TASK_STATE_FAILED
    assert "outcome was not kept" in task.status.message.parts[0].text


async def test_push_notification_configs_authenticate_first(server: RunningServer) -> None:
    """Push notifications are not offered, and only an authenticated caller learns that."""
    async with _a2a(server) as (client, _):
        calls = [
            lambda context: client.create_task_push_notification_config(
                a2a.TaskPushNotificationConfig(task_id="t", url="https://example.com/hook"), context=context
            ),
            lambda context: client.get_task_push_notification_config(
                a2a.GetTaskPushNotificationConfigRequest(task_id="t", id="c"), context=context
            ),
            lambda context: client.list_task_push_notification_configs(
                a2a.ListTaskPushNotificationConfigsRequest(task_id="t"), context=context
            ),
            lambda context: client.delete_task_push_notification_config(
                a2a.DeleteTaskPushNotificationConfigRequest(task_id="t", id="c"), context=context
            ),
        ]
        for call in calls:
            for anonymous in (ClientCallContext(timeout=30), _auth("nobody")):
                with pytest.raises(A2AClientError, match="UNAUTHENTICATED"):
                    await call(anonymous)
            with pytest.raises(PushNotificationNotSupportedError):
                await call(_auth("alice-token"))


async def test_replies_stay_under_a_default_clients_limit_whatever_the_request_held(server: RunningServer) -> None:
    """A message's non-text part (which the agent would never see) is refused; its other large fields are not
    echoed: the task's first event and SendMessage's reply carry only the prompt's parts, under 4 MiB."""
    five_mb = 5 * 1024 * 1024
    for streaming in (True, False):
        async with _a2a(server, streaming=streaming) as (client, _):
            request = _message("count my words")
            request.message.parts.append(a2a.Part(raw=b"x" * five_mb, media_type="application/octet-stream"))
            with pytest.raises(ContentTypeNotSupportedError, match="text parts only; the message has a raw part"):
                async for _ in client.send_message(request, context=_auth("alice-token")):
                    pass
            request = _message("count my words")
            request.message.metadata.update({"blob": "x" * five_mb})
            request.message.parts[0].metadata.update({"blob": "y" * 1024 * 1024})
            responses = [r async for r in client.send_message(request, context=_auth("alice-token"))]
        first = responses[0].task
        assert first.history[0].parts[0].text == "count my words"
        assert first.ByteSize() < 4 * 1024 * 1024
        conversation = Conversation()
        for response in responses:
            conversation.apply(response)
        assert conversation.states[-1] == "TASK_STATE_COMPLETED"
        assert conversation.text.startswith("You said 3 words at ")


async def test_an_ended_task_has_its_history_and_cannot_be_subscribed_to(server: RunningServer) -> None:
    """GetTask returns the message that started the task (`history_length` honoured); subscribing to an ended
    task is refused as the SDK's own handler refuses it."""
    async with _a2a(server, agent="weather") as (client, _):
        conversation = Conversation()
        async for response in client.send_message(_message("weather in Oslo?"), context=_auth("alice-token")):
            conversation.apply(response)
        alice = _auth("alice-token")
        task = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=alice)
        [message] = task.history
        assert (message.role, message.task_id, message.context_id) == (
            a2a.ROLE_USER,
            conversation.task_id,
            conversation.context_id,
        )
        assert [p.text for p in message.parts] == ["weather in Oslo?"]
        bare = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id, history_length=0), context=alice)
        assert list(bare.history) == []
        listed = await client.list_tasks(a2a.ListTasksRequest(), context=alice)
        assert [m.parts[0].text for t in listed.tasks for m in t.history] == ["weather in Oslo?"]
        with pytest.raises(UnsupportedOperationError, match="terminal state: TASK_STATE_COMPLETED"):
            async for _ in client.subscribe(a2a.SubscribeToTaskRequest(id=conversation.task_id), context=alice):
                pass


async def test_a_token_limited_to_agents_reaches_no_task_of_another_agent(server: RunningServer) -> None:
    """Alice's token limited to `weather` neither reads, lists, subscribes to nor cancels her task of `stalling`,
    under its tenant (PERMISSION_DENIED) or its own (not found); the task runs on."""
    conversation = Conversation()
    async with _a2a(server, agent="stalling") as (client, _):
        async for response in client.send_message(_message("go"), context=_auth("alice-token")):
            conversation.apply(response)
            if response.HasField("artifact_update"):
                break
        limited = _auth("alice-weather-token")
        for tenant in ("stalling", "weather"):
            error = A2AClientError if tenant == "stalling" else TaskNotFoundError
            match = "PERMISSION_DENIED" if tenant == "stalling" else "not found"
            with pytest.raises(error, match=match):
                await client.get_task(a2a.GetTaskRequest(id=conversation.task_id, tenant=tenant), context=limited)
            with pytest.raises(error, match=match):
                await client.cancel_task(a2a.CancelTaskRequest(id=conversation.task_id, tenant=tenant), context=limited)
            request = a2a.SubscribeToTaskRequest(id=conversation.task_id, tenant=tenant)
            with pytest.raises(error, match=match):
                async for _ in client.subscribe(request, context=limited):
                    pass
        with pytest.raises(A2AClientError, match="PERMISSION_DENIED"):
            await client.list_tasks(a2a.ListTasksRequest(tenant="stalling"), context=limited)
        listed = await client.list_tasks(a2a.ListTasksRequest(tenant="weather"), context=limited)
        assert list(listed.tasks) == []
        alice = _auth("alice-token")
        task = await client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=alice)
        assert task.status.state == a2a.TASK_STATE_WORKING  # untouched
        task = await client.cancel_task(a2a.CancelTaskRequest(id=conversation.task_id), context=alice)
        assert task.status.state == a2a.TASK_STATE_CANCELED
