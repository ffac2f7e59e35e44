"""Durable runs: the run queue, checkpoints and the rule that resumes a run, the fleet's advertisement."""
