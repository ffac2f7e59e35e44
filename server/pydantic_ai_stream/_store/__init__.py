"""Redis and PostgreSQL: every Redis command and Lua script, the conversation stores and sessions."""
