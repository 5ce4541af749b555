"""``python -m services.caseload worker [-l info] [--web-port N]``: the Faust worker CLI."""

from __future__ import annotations

from services.caseload.processor import build_app
from services.caseload.settings import CaseloadSettings


def main() -> None:
    build_app(CaseloadSettings.from_env()).main()


if __name__ == "__main__":
    main()
