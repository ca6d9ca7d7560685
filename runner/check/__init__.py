"""Checking candidates: the policy, the static rules before a run, the dynamic rules after it."""
