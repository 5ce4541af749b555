"""The demo case walk, step by step (used by services.demo and tests/e2e)."""
