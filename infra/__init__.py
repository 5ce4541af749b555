"""The development servers and deployment of casetrail; infra/servers.py is imported by the
tests and the benchmarks (the rest are scripts, charts and configuration)."""
