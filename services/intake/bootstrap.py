"""Composition of the intake service: storage, projections, bus subscription, gRPC server."""

from __future__ import annotations

import os
from datetime import timedelta

import grpc

from casetrail.intake.v1 import intake_pb2_grpc
from casetrail_platform.ages import agency_today
from casetrail_platform.hosting import RunningService, host_for
from casetrail_platform.infrastructure import Infrastructure
from casetrail_platform.policy.hosting import facts_access_control
from casetrail_platform.policy.projection import retire_old_facts_layout
from casetrail_platform.typed_numbers import ascii_decimal
from services.intake.adapters.case_closures import CaseClosuresProjection, ClosureLog
from services.intake.adapters.client_directory import ClientDirectory
from services.intake.adapters.emergency_accesses import (
    EmergencyAccessesProjection,
    EmergencyAccessQueue,
)
from services.intake.domain.emergency import DEFAULT_REVIEW_WITHIN
from services.intake.entrypoints.grpc_server import SERVICE_NAME, IntakeDeps, IntakeServicer

SERVICE = "intake"
REVIEW_HOURS_SETTING = "CASETRAIL_EMERGENCY_REVIEW_HOURS"


def emergency_review_within() -> timedelta:
    """How long an emergency access may wait for its review before it is overdue: the
    agency's setting (hours, more than 0 and at most 720), else 72 hours."""
    text = os.environ.get(REVIEW_HOURS_SETTING, "")
    if not text:
        return DEFAULT_REVIEW_WITHIN
    hours = ascii_decimal(text)
    if hours is None or not 0 < hours <= 720:
        raise ValueError(f"{REVIEW_HOURS_SETTING} must be a number of hours in (0, 720]")
    return timedelta(hours=hours)


async def start(infra: Infrastructure, address: str = "127.0.0.1:0") -> RunningService:
    host = await host_for(infra, SERVICE)
    await retire_old_facts_layout(host.read_models)
    directory = ClientDirectory(host.store, host.read_models, host.locks, infra.keyring)
    await directory.start()
    host.project_own_events(directory.projection)
    host.project_own_events(EmergencyAccessesProjection())
    closures = CaseClosuresProjection()
    host.subscribe(closures)
    access = facts_access_control(host)
    servicer = IntakeServicer(
        IntakeDeps(
            host.store,
            directory,
            ClosureLog(host.read_models, host.caught_up(closures, closures.event_types)),
            access,
            EmergencyAccessQueue(host.read_models),
            host.locks,
            infra.keyring,
            today=lambda: agency_today(infra.time_zone),
            review_within=emergency_review_within(),
            published=host.published,
        )
    )

    def register(server: grpc.aio.Server) -> None:
        intake_pb2_grpc.add_IntakeServiceServicer_to_server(servicer, server)

    return await host.start(address, [register], [SERVICE_NAME])
