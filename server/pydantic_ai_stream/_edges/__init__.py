"""The edges: the gRPC service, server and client, A2A, HTTP, the CLI, telemetry, the demo agent."""
