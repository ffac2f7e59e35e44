"""The foundation: errors, key names, the stream's names and event schema, settings, the metrics protocol, the
message codec. Imports nothing of the package."""
