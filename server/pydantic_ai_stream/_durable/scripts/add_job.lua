-- Adds a job on a Redis Cluster, where `open` cannot (its keys are in the session's slot, these in the queue's).
-- KEYS[1] jobs: the scope's job stream; KEYS[2] scopes, KEYS[3] turn, KEYS[4] ready: the queue's (see `add_job`)
-- ARGV the job's fields and values: field, value, field, value...
-- Returns nothing.
add_job(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 1)
