"""Generated from `protos/pydantic_ai_stream/v1/stream.proto` by `clients/generate`; do not edit."""
