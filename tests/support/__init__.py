"""The one place for tooling the tests share and the benchmarks use too (``bench/`` may import
``tests.support`` and nothing else of ``tests``): service processes (``distributed``), the
fault load and its reconciliation (``load``), fact histories (``fact_history``), fuzzing
generators, servers, identities, cases opened over gRPC (``cases``). A test module
(``tests/**/test_*.py``) is never imported by anything else; what two of them share moves here
(``tests/unit/test_support_boundary.py``)."""
