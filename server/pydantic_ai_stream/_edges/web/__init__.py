"""The web edge: the browser's protocols over HTTP, and the chat page (`page`)."""
