"""A2A over HTTP end to end: the a2a SDK's own HTTP clients (JSON-RPC, REST) and card resolver against `serve
--http-port`, on the same handler, task records and streams as the gRPC edge."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trustme
from a2a.client import A2ACardResolver, A2AClientError, Client, ClientConfig, ClientFactory
from a2a.types import a2a_pb2 as a2a
from a2a.utils.errors import InvalidRequestError, TaskNotFoundError
from test_a2a import Conversation, _a2a, _auth, _message
from test_a2a import _config as _grpc_config
from test_grpc_process import _process

from pydantic_ai_stream import Settings
from pydantic_ai_stream.server import RunningServer, ServerSettings, running_server


def _config(redis_url: str) -> ServerSettings:
    """The gRPC A2A tests' server, with an HTTP port."""
    return _grpc_config(redis_url).model_copy(update={"http_port": 0})


@pytest.fixture
async def server(redis_url: str, settings: Settings) -> AsyncIterator[RunningServer]:
    async with running_server(_config(redis_url), settings=settings) as running:
        yield running


def _base(server: RunningServer) -> str:
    assert server.http is not None
    return server.http.url


@contextlib.asynccontextmanager
async def _http_a2a(
    server: RunningServer, agent: str = "", binding: str = "JSONRPC", *, streaming: bool = True
) -> AsyncIterator[tuple[Client, a2a.AgentCard]]:
    """The SDK's HTTP client for `agent` (none: the default one), made from the card discovered at its
    well-known path."""
    async with httpx.AsyncClient(timeout=30) as http:
        base = _base(server) + (f"/a2a/agents/{agent}" if agent else "")
        card = await A2ACardResolver(http, base).get_agent_card()
        factory = ClientFactory(
            ClientConfig(streaming=streaming, supported_protocol_bindings=[binding], httpx_client=http)
        )
        client = factory.create(card)
        try:
            yield client, card
        finally:
            await client.close()


async def test_cards_are_discovered_at_the_well_known_path_and_name_every_interface(server: RunningServer) -> None:
    async with _http_a2a(server) as (_, default), _http_a2a(server, "weather") as (_, weather):
        assert default.name == "demo"
        assert weather.name == "weather"
    interfaces = {(i.protocol_binding, i.url, i.tenant) for i in weather.supported_interfaces}
    assert interfaces == {
        ("GRPC", f"127.0.0.1:{server.port}", "weather"),
        ("JSONRPC", f"{_base(server)}/a2a/jsonrpc", "weather"),
        ("HTTP+JSON", f"{_base(server)}/a2a/rest", "weather"),
    }


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_streamed_run_over_http_is_the_task_grpc_reads(server: RunningServer, binding: str) -> None:
    conversation = Conversation()
    async with _http_a2a(server, "weather", binding) as (client, _):
        async for response in client.send_message(_message("weather in Paris?"), context=_auth("alice-token")):
            conversation.apply(response)
    assert conversation.completed_in_order()
    assert conversation.text == "It is sunny."
    async with _a2a(server, agent="weather") as (grpc_client, _):
        task = await grpc_client.get_task(a2a.GetTaskRequest(id=conversation.task_id), context=_auth("alice-token"))
    assert task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for a in task.artifacts for p in a.parts] == ["It is sunny."]
    assert [p.text for m in task.history for p in m.parts] == ["weather in Paris?"]


async def test_a_non_streaming_send_over_http_returns_the_completed_task(server: RunningServer) -> None:
    async with _http_a2a(server, "weather", streaming=False) as (client, _):
        [response] = [r async for r in client.send_message(_message("weather?"), context=_auth("alice-token"))]
    assert response.task.status.state == a2a.TASK_STATE_COMPLETED
    assert [p.text for a in response.task.artifacts for p in a.parts] == ["It is sunny."]
    assert [p.text for m in response.task.history for p in m.parts] == ["weather?"]


async def test_resubscribe_and_cancel_over_http(server: RunningServer) -> None:
    """A client goes away mid-run; another subscribes (the task as it is, then the rest) and cancels it."""
    first = Conversation()
    async with _http_a2a(server, "stalling") as (client, _):
        async for response in client.send_message(_message("go"), context=_auth("alice-token")):
            first.apply(response)
            if response.HasField("artifact_update"):
                break
    assert first.states[-1] == "TASK_STATE_WORKING"
    second, cancelled = Conversation(), None
    async with _http_a2a(server, "stalling") as (client, _):
        subscribe = a2a.SubscribeToTaskRequest(id=first.task_id)
        async for response in client.subscribe(subscribe, context=_auth("alice-token")):
            second.apply(response)
            if cancelled is None and second.text == "thinking hard ":
                cancelled = await client.cancel_task(
                    a2a.CancelTaskRequest(id=first.task_id), context=_auth("alice-token")
                )
        listed = await client.list_tasks(a2a.ListTasksRequest(), context=_auth("alice-token"))
    assert second.states[0] == "TASK_STATE_WORKING"
    assert second.states[-1] == "TASK_STATE_CANCELED"
    assert second.text == "thinking hard "
    assert cancelled is not None
    assert cancelled.status.state == a2a.TASK_STATE_CANCELED
    assert [(t.id, t.status.state) for t in listed.tasks] == [(first.task_id, a2a.TASK_STATE_CANCELED)]


async def test_http_callers_authenticate_and_stay_in_their_tenancy(server: RunningServer) -> None:
    conversation = Conversation()
    async with _http_a2a(server, "weather") as (client, _):
        async for response in client.send_message(_message("weather?"), context=_auth("alice-token")):
            conversation.apply(response)
        get = a2a.GetTaskRequest(id=conversation.task_id)
        for anonymous in (None, _auth("nobody")):
            with pytest.raises(A2AClientError, match="401"):
                await client.get_task(get, context=anonymous)
            with pytest.raises(A2AClientError, match="401"):
                async for _ in client.send_message(_message("hi"), context=anonymous):
                    pass
            with pytest.raises(A2AClientError, match="401"):
                await client.get_task_push_notification_config(
                    a2a.GetTaskPushNotificationConfigRequest(task_id="t", id="c"), context=anonymous
                )
        with pytest.raises(TaskNotFoundError):
            await client.get_task(get, context=_auth("bob-token"))
        listed = await client.list_tasks(a2a.ListTasksRequest(), context=_auth("bob-token"))
        assert list(listed.tasks) == []
        with pytest.raises(InvalidRequestError, match="PERMISSION_DENIED"):
            await client.get_task(
                a2a.GetTaskRequest(id=conversation.task_id, tenant="stalling"), context=_auth("alice-weather-token")
            )
        task = await client.get_task(get, context=_auth("alice-weather-token"))
        assert task.status.state == a2a.TASK_STATE_COMPLETED


async def test_the_server_stops_with_an_http_stream_open(redis_url: str, settings: Settings) -> None:
    """An SSE stream following a run that never ends does not hold the server's shutdown."""
    conversation = Conversation()
    async with (
        running_server(_config(redis_url), settings=settings) as server,
        _http_a2a(server, "stalling") as (client, _),
    ):
        responses = client.send_message(_message("go"), context=_auth("alice-token"))
        async for response in responses:
            conversation.apply(response)
            if conversation.text == "thinking hard ":
                break
        stopping = asyncio.create_task(server.stop())
        with contextlib.suppress(A2AClientError):
            async for response in responses:
                conversation.apply(response)
        async with asyncio.timeout(30):
            await stopping
    assert conversation.text == "thinking hard "


async def test_serve_http_port_serves_a2a_and_stops_on_sigterm(redis_url: str, settings: Settings) -> None:
    """`pydantic-ai-stream serve --http-port`: one process serves A2A over HTTP; on SIGTERM with an event stream
    open it stops (the stream ends), exit status 0."""
    command = [sys.executable, "-m", "pydantic_ai_stream", "serve", "--port", "0", "--http-port", "0"]
    command += ["--agent", "stalling=grpc_agents:stalling", "--grace", "0.2"]
    env = {"REDIS_URL": redis_url, "PYDANTIC_AI_STREAM_REDIS_PREFIX": settings.redis_prefix}
    conversation = Conversation()
    with _process(command, env, r"serving HTTP on (\S+) ") as (proc, match):
        async with httpx.AsyncClient(timeout=30) as http:
            card = await A2ACardResolver(http, f"{match.group(1)}/a2a/agents/stalling").get_agent_card()
            client = ClientFactory(ClientConfig(httpx_client=http)).create(card)
            responses = client.send_message(_message("go"))
            async for response in responses:
                conversation.apply(response)
                if conversation.text == "thinking hard ":
                    break
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(A2AClientError):
                async for response in responses:
                    conversation.apply(response)
            await client.close()
        assert proc.wait(10) == 0
    assert conversation.text == "thinking hard "


async def test_a_request_larger_than_the_limit_is_refused_unread(server: RunningServer) -> None:
    """As on the gRPC port (`max_request_bytes`, 8 MiB): 413, with a length said or not."""
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {"text": "' + b"x" * (9 << 20)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    headers = {"authorization": "Bearer alice-token", "content-type": "application/json", "A2A-Version": "1.0"}
    async with httpx.AsyncClient(timeout=30) as http:
        for content in (body, chunks()):
            response = await http.post(f"{_base(server)}/a2a/jsonrpc", content=content, headers=headers)
            refused = response.status_code == 413 or "Payload too large" in response.text
            assert refused, (response.status_code, response.text[:200])


async def test_the_http_port_speaks_tls_and_mutual_tls_as_the_grpc_port(
    redis_url: str, tmp_path: Path, settings: Settings
) -> None:
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost")
    server_cert.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server_cert.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    tls = {
        "tls_cert": tmp_path / "server.pem",
        "tls_key": tmp_path / "server.key",
        "tls_client_ca": tmp_path / "ca.pem",
    }
    config = _config(redis_url).model_copy(update={"host": "localhost", **tls})
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    with_cert = ssl.create_default_context()
    ca.configure_trust(with_cert)
    ca.issue_cert("client@example").configure_cert(with_cert)
    async with running_server(config, settings=settings) as server:
        assert _base(server).startswith("https://localhost:")
        async with httpx.AsyncClient(verify=with_cert, timeout=30) as http:
            card = await A2ACardResolver(http, _base(server)).get_agent_card()
        assert {i.url for i in card.supported_interfaces if i.protocol_binding == "JSONRPC"} == {
            f"{_base(server)}/a2a/jsonrpc"
        }
        async with httpx.AsyncClient(verify=trusting, timeout=30) as no_client_cert:
            with pytest.raises(httpx.HTTPError):
                await no_client_cert.get(f"{_base(server)}/.well-known/agent-card.json")
