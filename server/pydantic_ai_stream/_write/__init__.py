"""The write side of a run: its lease, its stream writer, the live run that ties them to the event mapper."""
