"""A process's runtime: the `Runtime` that owns the background work, deps, the run loop, the worker."""
