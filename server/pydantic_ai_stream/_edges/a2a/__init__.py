"""The A2A protocol on our runtime (the `a2a` extra)."""
