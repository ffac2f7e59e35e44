"""The read side: one shared stream reader per process, listening with cursors, read-only session handles."""
