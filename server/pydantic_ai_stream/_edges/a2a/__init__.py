"""The A2A protocol on our runtime (the `a2a` extra): where it is served. This module imports without the extra.

A message starts a run (its `context_id` is our session, the task is the run); the run's stream entries become A2A
status updates and artifact chunks (`fold.TaskFold`); cancel is our cancel; subscribing replays the stream from the
run's `begin` and follows it, from any replica. A run that waits for input is an INPUT_REQUIRED task, and a message
naming that task answers it (`answers`), as `Respond` does. Tenant = agent name. Callers authenticate as on
`AgentStreamService`.

Modules: `service` serves it (gRPC through the SDK's `GrpcHandler`, HTTP routes behind our authentication),
`handler` answers its calls, `store` reads tasks from their records (`tasks`) and streams, `fold` turns a run's
entries into A2A events, `answers` says a wait's calls and reads its answers, `calls` holds what a call carries
(caller, transport) and how its errors are said.
"""

__all__ = ["A2A_HTTP_PREFIX", "A2A_SERVICE_NAME", "JSONRPC_PATH", "REST_PATH"]

A2A_SERVICE_NAME = "lf.a2a.v1.A2AService"
"""The A2A protocol's gRPC service: its callers authenticate as ours do."""

A2A_HTTP_PREFIX = "/a2a"
"""Where A2A's HTTP routes live on the HTTP port (the agent cards' standard path aside)."""
JSONRPC_PATH = f"{A2A_HTTP_PREFIX}/jsonrpc"
"""A2A's JSON-RPC endpoint on the HTTP port (the request's `tenant` param names the agent)."""
REST_PATH = f"{A2A_HTTP_PREFIX}/rest"
"""A2A's REST (HTTP+JSON) routes on the HTTP port (`/<tenant>/...` names the agent)."""
