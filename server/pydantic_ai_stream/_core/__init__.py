"""The foundation: errors, key names, the stream's names and event schema, settings. Imports nothing of the package."""
