"""Talk to an agent of a pydantic-ai-stream server over A2A with the a2a SDK's own gRPC client (`a2a` extra).

python examples/a2a_client.py [TARGET [TOKEN [AGENT [PROMPT]]]]   (default: localhost:50051, no token, demo)
"""

import asyncio
import sys

import grpc
from a2a.client import ClientCallContext, ClientConfig, ClientFactory, minimal_agent_card
from a2a.types import a2a_pb2 as a2a


async def converse(target: str, token: str | None, agent: str, prompt: str) -> str:
    """Fetch the agent's card over gRPC, send `prompt` streaming, print the task's states and text; the text."""
    call = ClientCallContext(service_parameters={"authorization": f"Bearer {token}"} if token else {})
    config = ClientConfig(supported_protocol_bindings=["GRPC"], grpc_channel_factory=grpc.aio.insecure_channel)
    factory = ClientFactory(config)
    bootstrap = factory.create(minimal_agent_card(target, ["GRPC"]))  # a gRPC server has no /.well-known card
    try:
        card = await bootstrap.get_extended_agent_card(a2a.GetExtendedAgentCardRequest(tenant=agent), context=call)
    finally:
        await bootstrap.close()
    interface = card.supported_interfaces[0]
    print(f"[card] {card.name}: {card.description}")
    print(f"[card] {interface.protocol_binding} at {interface.url}, tenant {interface.tenant!r}")
    client = factory.create(card)  # requests carry the card's tenant: the agent
    message = a2a.Message(message_id="m1", role=a2a.ROLE_USER, parts=[a2a.Part(text=prompt)])
    print(f"[user] {prompt}")
    text = ""
    try:
        async for response in client.send_message(a2a.SendMessageRequest(message=message), context=call):
            if response.HasField("task"):
                task = response.task
                print(f"[task {task.id} in context {task.context_id}] {a2a.TaskState.Name(task.status.state)}")
            elif response.HasField("status_update"):
                status = response.status_update.status
                detail = "".join(p.text for p in status.message.parts)
                print(f"\n[status] {a2a.TaskState.Name(status.state)}{f': {detail}' if detail else ''}")
            elif response.HasField("artifact_update"):
                update = response.artifact_update
                chunk = "".join(p.text for p in update.artifact.parts)
                if not update.append and text:
                    print("\n[artifact replaced: a worker resumed the run]")
                text = text + chunk if update.append else chunk
                print(chunk, end="", flush=True)
    finally:
        await client.close()
    return text


if __name__ == "__main__":
    args = sys.argv[1:] + [None] * 4
    asyncio.run(
        converse(
            args[0] or "localhost:50051", args[1], args[2] or "demo", args[3] or "count the words in this sentence"
        )
    )
