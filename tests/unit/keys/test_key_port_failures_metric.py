"""casetrail_key_port_failures_total: a KEK (KMS) that fails to wrap or unwrap is counted by
operation, never by key id, owner or client (there was no metric of the key port at all, so no
alert could tell a KMS outage apart from any other UNAVAILABLE)."""

from __future__ import annotations

import pytest

from casetrail_platform.keys.keyring import ClientKeyring
from casetrail_platform.keys.port import KeyUnavailableError
from casetrail_platform.telemetry.metrics import process_metrics
from tests.unit.keys.support import FakeKms, MemoryDataKeyTable

CLIENT = "client-7f3a"


class OutageKms(FakeKms):
    """A KMS that refuses every call while ``away``."""

    away = False

    def wrap(self, data_key: bytes, context: bytes) -> bytes:
        if self.away:
            raise KeyUnavailableError("KMS key fake-kms/agency")
        return super().wrap(data_key, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        if self.away:
            raise KeyUnavailableError("KMS key fake-kms/agency")
        return super().unwrap(wrapped, context)


def _failures() -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for metric in process_metrics().registry.collect()
        for sample in metric.samples
        if sample.name == "casetrail_key_port_failures_total"
    }


def test_a_failing_kek_is_counted_by_operation_only() -> None:
    kms, table = OutageKms(), MemoryDataKeyTable()
    before = _failures()
    kms.away = True
    with pytest.raises(KeyUnavailableError):
        ClientKeyring(kms, table).encryption_key(CLIENT)
    kms.away = False
    version, _key = ClientKeyring(kms, table).encryption_key(CLIENT)
    kms.away = True
    for _ in range(2):
        with pytest.raises(KeyUnavailableError):
            ClientKeyring(kms, table).decryption_key(CLIENT, version)

    after = _failures()
    wrap, unwrap = (("operation", "wrap"),), (("operation", "unwrap"),)
    assert after[wrap] - before.get(wrap, 0.0) == 1
    assert after[unwrap] - before.get(unwrap, 0.0) == 2
    assert set(after) == {wrap, unwrap}
