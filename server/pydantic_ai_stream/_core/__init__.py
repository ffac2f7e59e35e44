"""The foundation: errors, key names, the stream's names and event schema, settings, the entry and its cursor, the
one fold of a run's events, stored messages, the metrics protocol. Imports nothing of the package."""
