"""Commits of records a group passes by (Kafka): what the group members and the broker spend per
record of a type the groups do not want (every answered read's access record, for most groups),
when each poll of them is committed (``PASSED_COMMIT_EVERY`` 0, as before) or at most every
0.25 s (the product's setting).

    python -m bench.passed_commits_bench [--groups 8] [--rate 250] [--seconds 8] [--rounds 3]
                                         [--no-write]

A child process (``--members``) runs one member in each of ``--groups`` consumer groups, as
the services run them (``KafkaGroupMember``, each wanting one type that is never published),
on a topic of the run's own (6 partitions, deleted afterwards). This process publishes
``--rate`` records a second (2 KiB, 100 keys, the access record's type header), on a fixed
schedule whatever the members do, for 2 s of warm-up and then ``--seconds``; the child's CPU
and the broker's (``kafka.Kafka`` processes) are read from ``/proc`` around that window and the
child counts its commits. Rounds alternate the order of the two settings. Needs the Kafka
broker of ``make servers-start`` (``CASETRAIL_KAFKA_BOOTSTRAP``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.admin import NewTopic

from bench.common import (
    fmt_ratio,
    markdown_table,
    median,
    median_and_rounds,
    replace_section,
    run_header,
)
from bench.grpc_bench.cpu import cpu_of, kafka_pids
from bench.grpc_bench.storage import delete_topic
from casetrail_platform.bus.kafka_settings import KafkaSettings
from casetrail_platform.bus.topics import create_topics
from events.catalog.access import RecordAccessed
from infra.servers import KAFKA_BOOTSTRAP, servers_environment

HEADING = "## Commits of records a group passes by (Kafka)"
MODES = {"each poll": 0.0, "every 0.25 s": 0.25}
PARTITIONS = 6
WARM_UP = 2.0
RECORD = b"x" * 2048
KEYS = [f"case-{n:03d}".encode() for n in range(100)]


@dataclass(frozen=True)
class Window:
    records: int
    seconds: float
    members_cpu: float
    broker_cpu: float
    commits: int

    def per_record(self, cpu: float) -> float:
        return cpu / self.records * 1e6


async def members(bootstrap: str, topic: str, groups: int, every: float) -> None:
    """The child: ``groups`` members until standard input closes; each line read is answered
    with the commits so far."""
    from casetrail_platform.bus import kafka_consumer
    from casetrail_platform.bus.kafka_consumer import KafkaGroupMember
    from casetrail_platform.bus.retry import RetryPolicy
    from events.catalog_registry import default_registry

    kafka_consumer.PASSED_COMMIT_EVERY = every  # this benchmark's switch, not the product's
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    stop = asyncio.Event()
    commits = [0]
    assigned: set[str] = set()
    all_assigned = asyncio.Event()
    running: list[KafkaGroupMember] = []
    for number in range(groups):
        group = f"{topic}.group-{number}"

        async def nothing(event: object) -> None:
            return None

        def told(partitions: frozenset[int], group: str = group) -> None:
            if partitions:
                assigned.add(group)
            if len(assigned) == groups:
                all_assigned.set()

        member = KafkaGroupMember(
            settings=settings,
            topic=topic,
            group=group,
            handler=nothing,
            registry=default_registry(),
            retry=RetryPolicy(),
            stop=stop,
            on_assignment=told,
            event_types=frozenset({"casetrail.bench.never-published"}),
        )
        commit = member._commit

        async def counted(offsets: dict[object, int], commit: object = commit) -> None:
            commits[0] += 1
            await commit(offsets)  # type: ignore[operator]

        member._commit = counted  # type: ignore[method-assign]
        await member.start()
        running.append(member)
    tasks = [asyncio.create_task(member.consume()) for member in running]
    await all_assigned.wait()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    while await reader.readline():
        print(commits[0], flush=True)
    stop.set()
    await asyncio.gather(*tasks)
    for member in running:
        await member.close()


async def window(bootstrap: str, groups: int, every: float, rate: int, seconds: float) -> Window:
    topic = f"casetrail.bench-passed-{uuid.uuid4().hex[:8]}"
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    await create_topics(settings, [NewTopic(topic, PARTITIONS, 1)])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.passed_commits_bench", "--members", "--topic", topic,
        "--groups", str(groups), "--every", str(every),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert child.stdin is not None
    assert child.stdout is not None
    try:
        assert (await child.stdout.readline()).strip() == b"ready"

        async def commits() -> int:
            assert child.stdin is not None
            assert child.stdout is not None
            child.stdin.write(b"?\n")
            return int(await child.stdout.readline())

        headers = [("ce_type", RecordAccessed.event_type.encode())]
        sent = 0
        started = time.monotonic()
        marks: dict[str, tuple[float, float, float, int, int]] = {}
        while (elapsed := time.monotonic() - started) < WARM_UP + seconds:
            if "start" not in marks and elapsed >= WARM_UP:
                marks["start"] = (time.monotonic(), cpu_of([child.pid]), cpu_of(kafka_pids()),
                                  sent, await commits())  # fmt: skip
            due = int(elapsed * rate)
            batch = [
                await producer.send(topic, RECORD, key=KEYS[n % len(KEYS)], headers=headers)
                for n in range(sent, due)
            ]
            sent = due
            await asyncio.gather(*batch)
            await asyncio.sleep(0.01)
        end = (time.monotonic(), cpu_of([child.pid]), cpu_of(kafka_pids()), sent, await commits())
        begin = marks["start"]
        return Window(
            records=end[3] - begin[3],
            seconds=end[0] - begin[0],
            members_cpu=end[1] - begin[1],
            broker_cpu=end[2] - begin[2],
            commits=end[4] - begin[4],
        )
    finally:
        if child.stdin is not None:
            child.stdin.close()
        await child.wait()
        await producer.stop()
        await delete_topic(bootstrap, topic)


HEADERS = [
    "commit of a poll passed by",
    "commits/s by round",
    "records/s by round",
    "members' process, µs/record",
    "broker, µs/record",
    "both, µs/record",
]


async def run(groups: int, rate: int, seconds: float, rounds: int, bootstrap: str) -> str:
    began = time.perf_counter()
    load_before = os.getloadavg()[0]
    results: dict[str, list[Window]] = {mode: [] for mode in MODES}
    for round_number in range(rounds):
        order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
        for mode in order:
            results[mode].append(await window(bootstrap, groups, MODES[mode], rate, seconds))
    rows = []
    for mode, windows in results.items():
        members_cpu = [w.per_record(w.members_cpu) for w in windows]
        broker_cpu = [w.per_record(w.broker_cpu) for w in windows]
        rows.append([
            mode,
            ", ".join(f"{w.commits / w.seconds:.0f}" for w in windows),
            ", ".join(f"{w.records / w.seconds:.0f}" for w in windows),
            median_and_rounds(members_cpu),
            median_and_rounds(broker_cpu),
            f"{median(members_cpu) + median(broker_cpu):.0f}",
        ])  # fmt: skip
    each, lazy = (results[mode] for mode in MODES)
    ratios = [
        fmt_ratio(
            (b.per_record(b.members_cpu) + b.per_record(b.broker_cpu))
            / (a.per_record(a.members_cpu) + a.per_record(a.broker_cpu))
        )
        for a, b in zip(each, lazy, strict=True)
    ]
    command = (
        f"python -m bench.passed_commits_bench --groups {groups} --rate {rate} "
        f"--seconds {seconds:g} --rounds {rounds}"
    )
    lines = [
        *run_header(began, command, load_before),
        "",
        f"{groups} consumer groups (one member each, in one process) on a topic of "
        f"{PARTITIONS} partitions, none of them wanting the records published: {rate} "
        f"records a second, open loop, 2 KiB each, {WARM_UP:g} s of warm-up, then "
        f"{seconds:g} s measured, {rounds} rounds (the order of the settings alternating); "
        "per record, in µs of CPU, the median of the rounds and each round in brackets:",
        "",
        markdown_table(HEADERS, rows),
        "",
        f"Every 0.25 s against each poll, both sides' CPU per record, by round: "
        f"{', '.join(ratios)}.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--groups", type=int, default=8)
    parser.add_argument("--rate", type=int, default=250)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--members", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--topic", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    environment = servers_environment(KAFKA_BOOTSTRAP)
    bootstrap = KafkaSettings.from_env(environment).bootstrap_servers
    if options.members:
        asyncio.run(members(bootstrap, options.topic, options.groups, options.every))
        return
    text = asyncio.run(
        run(options.groups, options.rate, options.seconds, options.rounds, bootstrap)
    )
    if not options.no_write:
        replace_section(HEADING, text)
    print(text)


if __name__ == "__main__":
    main()
