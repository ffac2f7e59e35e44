"""`python -m pydantic_ai_stream ...` is the `pydantic-ai-stream` command."""

from .cli import main

main()
