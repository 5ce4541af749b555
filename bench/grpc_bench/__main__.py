"""gRPC command benchmarks (issue 4): commands per second through the services' APIs.

``python -m bench.grpc_bench [--quick] [--no-write] [--keep]`` writes the section "## gRPC commands
(issue 4)" of ``bench/RESULTS.md``. Needs the PostgreSQL server and the Kafka broker of
``make servers-start`` (``CASETRAIL_PG_DSN``, ``CASETRAIL_KAFKA_BOOTSTRAP``).

Three kinds of process, so the load generator's CPU is never counted as the server's:

* the servers: (a) embedded, ``python -m services.runner --any-port`` (all four services in
  one process, SQLite files, in-process bus); (b) distributed, one process per service on a
  fresh PostgreSQL database (``CREATE DATABASE``, dropped afterwards) and a Kafka topic of
  its own (deleted afterwards), started by ``--serve``, which is ``services.runner``'s start
  with the topic as a parameter (the runner always uses the shared development topic, which
  would keep the benchmark's events forever); (c) the reference, ``--serve-empty``: intake's
  gRPC server set-up with an OpenCase that does nothing, the ceiling of any Python gRPC
  service process measured this way on this machine;
* the load generator (``--load``): grpc.aio stubs over a few channels, many calls in flight
  (closed loop), or calls started at a fixed rate whatever the answers (open loop; latency
  counted from when the call was due, so a stalled server cannot hide its queue);
* this orchestrator, which starts them and writes the report.

The load generator reads the CPU time of every process involved from ``/proc`` at the start
and end of each measurement window (servers, PostgreSQL, Kafka, itself, the whole machine):
on two cores the load generator competes with the servers, and the report says how much.
A full run (or ``--profile-run``) also profiles the event loop's thread with cProfile, switched
on and off by signal for one OpenCase window: the distributed intake process at the end of
its run, and the embedded services in one more process like the runner's. ``--keep`` keeps
the servers' logs and data.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from bench.grpc_bench.auth import auth_main
from bench.grpc_bench.loadgen import load_entry
from bench.grpc_bench.plan import SERVICES
from bench.grpc_bench.policy import policy_main
from bench.grpc_bench.reference import serve_empty_entry
from bench.grpc_bench.serve import serve_entry
from bench.grpc_bench.switches import AUTH_MODES, POLICY_MODES, TELEMETRY_MODES
from bench.grpc_bench.telemetry import telemetry_main
from bench.grpc_bench.throughput import run


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.grpc_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smaller run (under 45 s)")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and data")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument(
        "--profile-run",
        dest="profile_run",
        action="store_true",
        default=None,
        help="profile the servers under OpenCase (the default of a full run)",
    )
    profile.add_argument("--no-profile-run", dest="profile_run", action="store_false")
    parser.add_argument("--load", action="store_true", help="(internal) the load generator")
    parser.add_argument("--serve", action="store_true", help="(internal) run services")
    parser.add_argument(
        "--serve-empty", action="store_true", help="(internal) run the empty OpenCase handler"
    )
    parser.add_argument("--backend", choices=["embedded", "distributed"], default="embedded")
    parser.add_argument("--service", action="append", choices=SERVICES)
    parser.add_argument("--topic", default="casetrail.case-events")
    parser.add_argument("--data-dir")
    parser.add_argument("--profile", help="(internal, --serve) write a cProfile here")
    parser.add_argument(
        "--auth",
        action="store_true",
        help="only the authentication rows: OpenCase and GetCaseView with the token checks "
        "off, on every call, and as the product does them (issue 9)",
    )
    parser.add_argument(
        "--auth-mode", choices=AUTH_MODES, default="product", help="(internal, --serve)"
    )
    parser.add_argument(
        "--telemetry",
        action="store_true",
        help="only the telemetry rows: OpenCase and GetCaseView with no telemetry, metrics, "
        "and metrics and traces (issue 11)",
    )
    parser.add_argument(
        "--telemetry-mode",
        choices=TELEMETRY_MODES,
        default="metrics",
        help="(internal, --serve)",
    )
    parser.add_argument(
        "--policy",
        action="store_true",
        help="only the access-policy rows: OpenCase and GetCaseView with the access policy and "
        "access recording off and on (issue 9)",
    )
    parser.add_argument(
        "--policy-mode", choices=POLICY_MODES, default="on", help="(internal, --serve)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse(argv)
    if options.load:
        logging.basicConfig(level=logging.WARNING, format="loadgen: %(message)s")
        load_entry()
        return
    if options.serve:
        serve_entry(options)
        return
    if options.auth:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(auth_main(options.quick, not options.no_write, options.keep)))
        return
    if options.telemetry:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(telemetry_main(options.quick, not options.no_write, options.keep)))
        return
    if options.policy:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        print(asyncio.run(policy_main(options.quick, not options.no_write, options.keep)))
        return
    if options.serve_empty:
        serve_empty_entry()
        return
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    print(asyncio.run(run(options.quick, not options.no_write, options.profile_run, options.keep)))


if __name__ == "__main__":
    main()
