"""gRPC command benchmarks (issue 4 and after): ``python -m bench.grpc_bench``; see
``__main__`` for what it runs and how."""
