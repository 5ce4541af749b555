"""The caseload views take bearer tokens, and the chart serves them on the pod's address: with
CASETRAIL_TLS_CERT/_KEY (the chart sets them whenever grpcTls is on, always in production) they
are served over HTTPS (review of identity, h-tls); before, they were plain HTTP whatever the
settings, every token readable on the way."""

from __future__ import annotations

import ssl
from pathlib import Path

from services.caseload.processor import build_app
from services.caseload.settings import CaseloadSettings
from tests.unit.test_identity import (  # noqa: F401 (a fixture)
    Certificates,
    certificates,
)


def test_the_views_are_https_with_the_services_certificate(
    tmp_path: Path,
    certificates: Certificates,  # noqa: F811
) -> None:
    (tmp_path / "tls.crt").write_bytes(certificates.server_chain)
    (tmp_path / "tls.key").write_bytes(certificates.server_key)
    (tmp_path / "tls.key").chmod(0o600)
    env = {
        "CASETRAIL_TLS_CERT": str(tmp_path / "tls.crt"),
        "CASETRAIL_TLS_KEY": str(tmp_path / "tls.key"),
        "CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path / "caseload"),
    }
    settings = CaseloadSettings.from_env(env)
    assert settings.web_tls is not None
    context = build_app(settings).conf.web_ssl_context
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE  # no client certificates asked for


def test_without_a_certificate_the_views_stay_plain_http(tmp_path: Path) -> None:
    settings = CaseloadSettings.from_env({"CASETRAIL_CASELOAD_DATA_DIR": str(tmp_path)})
    assert settings.web_tls is None
    assert build_app(settings).conf.web_ssl_context is None
