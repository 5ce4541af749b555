"""Where the services fall short of the target and why, with the run's own numbers."""

from __future__ import annotations

from collections.abc import Sequence

from bench.common import fmt_rate, fmt_ratio
from bench.grpc_bench.plan import SERVICES, TARGET
from bench.grpc_bench.profiles import loop_time, per_command, profile_section, share
from bench.grpc_bench.results import BenchRun, Profile, RowResult
from bench.grpc_bench.tables import COMMAND_NAMES, cores, find, ms, pair


def shortfall(result: BenchRun) -> list[str]:
    below = [
        r
        for r in [*result.embedded, *result.distributed]
        if r.spec.mode == "closed" and r.rate < TARGET
    ]
    if not below:
        return ["Every measured service process reached the target."]
    lines = ["### Where we fall short and why", ""]
    for r in below:
        lines.append(
            f"- **Below target**: {r.spec.setup} {COMMAND_NAMES[r.spec.command]}: "
            f"{fmt_rate(r.rate)} commands/s, {r.rate / TARGET:.0%} of {fmt_rate(TARGET)}; the "
            f"serving process used {cores(r.cores(r.spec.server))} cores, "
            f"{fmt_rate(r.per_cpu_second(r.spec.server))} commands per CPU-second of it."
        )
    embedded = next((p for p in result.profiles if p.row.spec.setup == "embedded"), None)
    intake = next((p for p in result.profiles if p.row.spec.setup == "distributed"), None)
    lines += ["", "Measured in this run:", "", *reference_ceiling(result)]
    if embedded is not None:
        lines += embedded_evidence(embedded, find(result.embedded, "open_case"))
    lines += distributed_evidence(result.distributed, intake)
    lines += ["", "Why:", "", *WHY, *cpu_ceiling(result.distributed)]
    for profile in result.profiles:
        lines += ["", *profile_section(profile)]
    return lines


def reference_ceiling(result: BenchRun) -> list[str]:
    empty = find(result.reference, "open_case")
    if empty is None or not empty.ok:
        return []
    return [
        f"- An empty OpenCase handler (the reference row) reaches {fmt_rate(empty.rate)}/s "
        f"({fmt_ratio(empty.rate / TARGET)} the target) with the load generator on the same "
        f"two cores (server {cores(empty.cores(empty.spec.server))} cores, load generator "
        f"{cores(empty.cores('loadgen'))}): that is this machine's ceiling for any Python gRPC "
        "service process measured this way."
    ]


def embedded_evidence(profile: Profile, closed: RowResult | None) -> list[str]:
    _, idle, _ = per_command(profile, "~", "<method 'poll' of 'select.epoll' objects>")
    statements, blocked, _ = per_command(
        profile, "~", "<method 'execute' of 'sqlite3.Connection' objects>"
    )
    # One read-model transaction object per transaction: a plain call, counted exactly.
    transactions, _, _ = per_command(
        profile, "casetrail_platform/projections/sqlite.py", "__init__"
    )
    decoded, _, _ = per_command(profile, "events/cloudevents/decoding.py", "from_kafka_binary")
    _, _, delivering = per_command(profile, "casetrail_platform/bus/delivery.py", "deliver")
    _, _, command = per_command(profile, "casetrail_platform/grpc_platform/server.py", "wrapper")
    built, _, builds = per_command(profile, "services/intake/app/handlers.py", "opening_of")
    loop = loop_time(profile) / max(profile.row.ok, 1) * 1e6
    fsync = pair(closed.samples, "fsync") if closed else "-"
    lines = []
    if closed is not None and closed.ok:
        main = closed.cpu.get(f"{closed.spec.server}/main", 0.0) / closed.ok * 1000
        lines.append(
            f"- Embedded, without the profiler, the main thread (the event loop of all four "
            f"services) spent {main:.2f} ms of CPU per OpenCase at {fmt_rate(closed.rate)}/s, "
            f"{cores(closed.cores(f'{closed.spec.server}/main'))} cores, and the process "
            f"{cores(closed.cores(closed.spec.server))} cores of the 2 the machine has: one "
            "thread does the work of all four services."
        )
    return [
        *lines,
        f"- Under the profiler (which slows it: {fmt_rate(profile.row.rate)}/s) the loop's "
        f"thread spent {loop / 1000:.1f} ms per OpenCase, waiting in epoll for only "
        f"{share(profile, idle)} of it"
        + (
            ": the loop is saturated, and the shares below say what fills it."
            if idle < loop / 5
            else "."
        ),
        f"- {statements:.1f} SQLite statements in {transactions:.2f} read-model transactions "
        "per command run ON the event loop's thread (casetrail_platform/projections/sqlite.py): "
        f"{blocked:.0f} us per command, {share(profile, blocked)} of the loop; while they run "
        "nothing else in the process moves. These commits do not fsync (the embedded read "
        "models are replayed from the stores after a crash); the event store's durable commits "
        f"do, in its writer thread (a 200-byte fdatasync took {fsync} ms, p50 / p99, in the "
        "OpenCase window).",
        f"- Delivering each event to the subscriptions (the in-process bus hands over the "
        f"`RecordedEvent` itself: {decoded:.1f} CloudEvent decodes per command) takes "
        f"{delivering:.0f} us of loop per command ({share(profile, delivering)}), "
        f"{transactions:.2f} read-model transactions per command (one per projection per "
        "linger window, not one per event).",
        f"- The command itself, request to answer (`refusals_as_status` wrapper): {command:.0f} "
        f"us of loop per command, of which {builds:.0f} us build and validate the `CaseOpened` "
        f"event (`opening_of`, {built:.1f} calls per command"
        + ("; once to check the request, once again in the handler)." if built >= 1.5 else ")."),
    ]


def distributed_evidence(results: Sequence[RowResult], profile: Profile | None) -> list[str]:
    closed = find(results, "open_case")
    paced = find(results, "open_case", "rate")
    lines = []
    if closed is not None and closed.ok:
        main = closed.cpu.get("intake/main", 0.0) / closed.ok * 1000
        lines.append(
            f"- Distributed, intake's main thread spent {main:.1f} ms of CPU per OpenCase, and "
            f"with {closed.spec.concurrency} commands in flight the process used only "
            f"{cores(closed.cores('intake'))} cores: it mostly waits. PostgreSQL `SELECT 1` "
            f"round trips took {pair(closed.samples, 'pg')} ms (p50 / p99) meanwhile."
        )
        spent = sum(closed.cpu.get(label, 0.0) for label in [*SERVICES, "postgres", "kafka"])
        lines.append(
            f"- The machine was {cores(closed.cores('machine'))} cores busy of 2 in that window: "
            f"the four services, PostgreSQL and Kafka together spent {spent / closed.ok * 1000:.1f}"
            " ms of CPU per OpenCase (intake's command and relay, then every subscriber decoding "
            "the event from Kafka and writing its read models), so on two cores the whole "
            f"system tops out near {2 * closed.ok / spent:,.0f} OpenCase/s before any wait."
        )
    if paced is not None:
        lines.append(
            f"- At {paced.spec.rate}/s offered an OpenCase takes {ms(paced.p50_ms)} ms (p50): "
            "a chain of round trips (client, intake, PostgreSQL), "
            "each one waking another process on two cores shared by the four services, "
            "PostgreSQL, Kafka and the load generator."
        )
    if profile is not None:
        sends, send_us, _ = per_command(profile, "psycopg/_cursor_base.py", "_send_query_prepared")
        decoded, _, decode_us = per_command(
            profile, "casetrail_platform/store/rows.py", "to_recorded"
        )
        _, _, appending = per_command(profile, "casetrail_platform/store/postgres.py", "_append_on")
        lines.append(
            f"- Intake's profile: {sends:.1f} statements sent per OpenCase ({send_us:.0f} us "
            f"of loop per command inside libpq's send, {share(profile, send_us)} of the loop, "
            "far more than writing a few hundred bytes to a socket costs: on a busy two-core "
            "machine the send wakes a PostgreSQL backend, which may take the core at once), "
            f"{decoded:.1f} stored events decoded per command ({decode_us:.0f} us), "
            f"{appending:.0f} us of loop per command in the append itself."
        )
    return lines


WHY = [
    "- **gRPC itself takes most of the budget.** The reference row is an empty OpenCase "
    "handler behind the same server set-up. Its server process already spends the CPU per call "
    "shown above, and the load generator needs a large share of the same two cores. 2,000 "
    "commands/s per process leaves 500 us of one core per command, for everything.",
    "- **One loop carries all four services (embedded).** The four services share one asyncio "
    "loop and one GIL. A command costs protobuf to the pydantic catalog event, its reads, a "
    "durable append through the SQLite writer thread and the answer. Then four subscriptions "
    "(intake's own projections, coordination, planning, audit) write their read models on the "
    "loop's thread. Done so far:",
    "  - A command's reads are one call (`read_for_command`).",
    "  - SQLite reads of a few rows run on the loop, without a hop to a reader thread.",
    "  - Projections take what arrived within a 20 ms linger, across partitions, as one "
    "read-model transaction.",
    "  - The in-process bus hands subscribers the `RecordedEvent` itself, without decoding.",
    "  - A command derives its id once.",
    "- **Still on the loop (embedded).** Read-model SQL, `COMMIT` included. A writer thread "
    "would move it off the loop but not off the GIL, which the event store's writer thread "
    "(it encodes the rows) already competes for.",
    "- **Six processes on two cores (distributed).** Every command costs CPU in intake, in the "
    "three consumers, in PostgreSQL and in Kafka. The machine is fully busy (the CPU split "
    "above). Each libpq send wakes a PostgreSQL backend that may take the core at once (the "
    "profile below). Done so far:",
    "  - Group commit for appends.",
    "  - A command's reads in one round trip.",
    "  - Consumers apply a whole poll in one transaction; the broker holds a fetch up to "
    "20 ms for 64 KiB.",
    "- **Left (distributed).** psycopg's pipeline mode, fewer statements per read-model "
    "transaction, and more partitions and consumer processes where cores allow.",
]


def cpu_ceiling(results: Sequence[RowResult]) -> list[str]:
    """The last reason, with this run's numbers."""
    closed = find(results, "open_case")
    if closed is None or not closed.ok or not closed.cpu.get("intake/main"):
        return []
    main = closed.cpu["intake/main"] / closed.ok
    return [
        "- **Too much CPU per command for one core.** Even with every wait removed, a service "
        f"process is one Python thread: intake's main thread spent {main * 1000:.1f} ms of CPU "
        f"per OpenCase in this run, a ceiling of about {1 / main:,.0f} commands/s per process "
        f"on a core of its own ({1 / main / TARGET:.0%} of the target), and here the two cores "
        "are shared with PostgreSQL, Kafka and the other services. The CPU goes to gRPC's "
        "Python/Cython glue (the reference row's share), building and validating the catalog "
        "event, psycopg's adaptation and libpq's sends, the outbox relay and intake's own "
        f"projections. {TARGET:,.0f}/s per process would need it cut to "
        f"{1e6 / TARGET:.0f} us."
    ]
