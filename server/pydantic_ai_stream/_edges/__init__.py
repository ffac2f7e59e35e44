"""The edges: the gRPC service and server, A2A, HTTP, the CLI, telemetry, the demo agent."""
