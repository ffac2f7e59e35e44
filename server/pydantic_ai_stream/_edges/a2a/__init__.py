"""The A2A protocol on our runtime (the `a2a` extra; this module itself imports without it)."""

A2A_SERVICE_NAME = "lf.a2a.v1.A2AService"
"""The A2A protocol's gRPC service: its callers authenticate as ours do."""
