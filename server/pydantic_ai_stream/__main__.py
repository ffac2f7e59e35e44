"""`python -m pydantic_ai_stream ...` is the `pydantic-ai-stream` command."""

from ._edges.cli import main

main()
