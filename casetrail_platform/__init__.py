"""The event platform every casetrail service runs on: store, bus, projections, outbox,
commands, identity, access policy, ledger, locks, telemetry, gRPC plumbing and hosting.

Built on the public catalog (``events``), which never imports it back. Named
``casetrail_platform`` rather than ``platform``, which would shadow the standard library module.
Nothing runs at import time: modules here define types and functions only.
"""
