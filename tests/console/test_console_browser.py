"""The console in a real headless browser (Debian's chromium, driven by Selenium through
chromium-driver): sign in, open the demo case, filter the timeline, pick an as-of moment,
compare two moments, open the access log. Screenshots land in the test's tmp directory, and
axe-core (from npm, `make browser-install`) checks every page: no serious or critical
violation."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.wait import WebDriverWait
from starlette.testclient import TestClient

from casetrail.audit.v1 import audit_pb2
from services.console import pages
from services.console.app import create_app
from services.console.audit_client import AuditClient, Caller
from services.console.server import RunningConsole, start_console
from tests.console.conftest import DemoCasetrail
from tests.console.pages import accessed_by
from tests.console.pages import sign_in as sign_in_by_client

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
AXE_VERSION = "4.14.1"
AXE = (
    Path(
        os.environ.get(
            "CASETRAIL_AXE_DIR", Path.home() / ".cache" / "casetrail" / f"axe-core-{AXE_VERSION}"
        )
    )
    / "node_modules"
    / "axe-core"
    / "axe.min.js"
)
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document)
  .then((result) => done({
    passes: result.passes.length,
    violations: result.violations.map((v) => [v.id, v.impact, v.nodes.length]),
  }))
  .catch((error) => done({passes: 0, violations: [["axe-error", String(error), 0]]}));
"""


def missing(message: str) -> NoReturn:
    if os.environ.get("CASETRAIL_REQUIRE_SERVERS") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        missing(f"axe-core is needed at {AXE} (make browser-install)")
    return AXE.read_text()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (CHROMIUM and CHROMEDRIVER):
        missing("chromium and chromium-driver are needed (make browser-install)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1400",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.implicitly_wait(5)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def console(demo_casetrail: DemoCasetrail) -> Iterator[RunningConsole]:
    background = demo_casetrail.background
    running = background.run(start_console(demo_casetrail.settings(), "127.0.0.1", 0))
    try:
        yield running
    finally:
        background.run(running.stop())


def set_moment(driver: WebDriver, field_id: str, value: str) -> None:
    # Typing into a date-time field depends on the browser's locale; set it as a user's
    # date picker would, then let the form send it.
    field = driver.find_element(By.ID, field_id)
    driver.execute_script("arguments[0].value = arguments[1]", field, value)


def serious_violations(driver: WebDriver, axe_source: str) -> list[str]:
    """axe-core's serious and critical findings on the page shown (injected by WebDriver, so
    the page's own Content-Security-Policy stays as strict as ever)."""
    driver.execute_script(axe_source)
    found = driver.execute_async_script(RUN_AXE)
    assert found["passes"] > 0, "axe-core ran no rule"
    return [
        f"{rule} ({impact}, {nodes} elements)"
        for rule, impact, nodes in found["violations"]
        if impact in ("serious", "critical") or rule == "axe-error"
    ]


class Pages:
    """Screenshots each page reviewed and checks it with axe-core."""

    def __init__(self, driver: WebDriver, axe_source: str, folder: Path) -> None:
        self.driver = driver
        self.axe_source = axe_source
        self.folder = folder
        self.violations: dict[str, list[str]] = {}

    def check(self, name: str) -> None:
        self.driver.save_screenshot(str(self.folder / f"{name}.png"))
        found = serious_violations(self.driver, self.axe_source)
        if found:
            self.violations[name] = found


def follow(driver: WebDriver, element: WebElement) -> None:
    """Click ``element`` and wait for the page it leads to: the click returns before the
    navigation ends, and the old page's header or tables would be read instead."""
    element.click()
    WebDriverWait(driver, 30).until(staleness_of(element))


def submit(driver: WebDriver, label: str) -> None:
    follow(driver, driver.find_element(By.XPATH, f"//button[normalize-space()='{label}']"))


class TamperedProofs(AuditClient):
    """Audit's client with every inclusion proof altered on its way to the browser: one bit of
    its first sibling hash (of the checkpoint's root when the proof is empty)."""

    async def prove_event(
        self, caller: Caller, event_id: str
    ) -> audit_pb2.ProveEventInclusionResponse:
        answer = audit_pb2.ProveEventInclusionResponse()
        answer.CopyFrom(await super().prove_event(caller, event_id))
        if answer.proof:
            answer.proof[0] = bytes([answer.proof[0][0] ^ 1]) + answer.proof[0][1:]
        else:
            root = answer.checkpoint.root_hash
            answer.checkpoint.root_hash = bytes([root[0] ^ 1]) + root[1:]
        return answer


class RewrittenRows(AuditClient):
    """Audit's timeline with each row's actor, role and occurred time rewritten on its way to
    the browser; its ledger bytes, proofs, keys and checkpoints left as audit answered."""

    async def timeline(self, *args: object, **kwargs: object) -> audit_pb2.GetTimelineResponse:
        page = await super().timeline(*args, **kwargs)  # type: ignore[arg-type]
        for entry in page.entries:
            entry.actor.user_id = "mallory"
            entry.actor.role = "supervisor"
            entry.occurred_at.FromDatetime(datetime(2001, 1, 1, tzinfo=UTC))
        return page


OTHER_CASE = "another-case"


class AnotherCasesRows(AuditClient):
    """The timeline of ``OTHER_CASE`` answered with the demo case's rows, each with its own
    genuine ledger bytes and proof: another case's events shown as this one's."""

    demo_case = ""

    async def timeline(
        self, caller: Caller, case_id: str, *args: object, **kwargs: object
    ) -> audit_pb2.GetTimelineResponse:
        assert case_id == OTHER_CASE
        return await super().timeline(caller, self.demo_case, *args, **kwargs)  # type: ignore[arg-type]


def integrity_checked(driver: WebDriver) -> str:
    """The timeline's integrity state once the browser checked every row, reloading while
    some event is not yet in a checkpoint (services sign every few seconds)."""
    deadline = time.monotonic() + 90
    while True:
        state = WebDriverWait(driver, 30).until(
            lambda found: found.find_element(By.ID, "integrity-summary").get_attribute("data-state")
        )
        if state != "pending" or time.monotonic() > deadline:
            return state or ""
        time.sleep(2)
        driver.refresh()


def badges(driver: WebDriver) -> list[str]:
    return [
        cell.text for cell in driver.find_elements(By.CSS_SELECTOR, "#timeline .integrity-cell")
    ]


def sign_in_and_open(driver: WebDriver, url: str, case_id: str, user: str) -> None:
    driver.get(url + "/signin")
    driver.find_element(By.ID, "dev-user").send_keys(user)
    Select(driver.find_element(By.ID, "dev-role")).select_by_value("auditor")
    submit(driver, "Sign in (development)")
    driver.find_element(By.ID, "case-id").send_keys(case_id)
    submit(driver, "Open the case")


def test_an_auditor_reviews_the_demo_case(
    browser: WebDriver,
    console: RunningConsole,
    demo_casetrail: DemoCasetrail,
    axe_source: str,
    tmp_path: Path,
) -> None:
    case_id = demo_casetrail.case_id
    reviewed = Pages(browser, axe_source, tmp_path)
    browser.get(console.url + "/")
    assert browser.current_url.endswith("/signin")
    # Keyboard: the first Tab reaches the skip link.
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.text == "Skip to content"
    reviewed.check("01-signin")

    browser.find_element(By.ID, "dev-user").send_keys("ada-browser")
    Select(browser.find_element(By.ID, "dev-role")).select_by_value("auditor")
    submit(browser, "Sign in (development)")
    assert "Signed in as" in browser.find_element(By.TAG_NAME, "header").text

    browser.find_element(By.ID, "client-id").send_keys(demo_casetrail.client_id)
    submit(browser, "Find the cases of this client")
    assert demo_casetrail.client_id not in browser.current_url
    follow(browser, browser.find_element(By.LINK_TEXT, f"Case {case_id}"))
    assert browser.current_url.endswith(f"/cases/{case_id}")
    types = [
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#timeline td:nth-child(3)")
    ]
    assert "casetrail.case.opened" in types
    assert len(set(types)) > 3
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline .late-badge")
    assert integrity_checked(browser) == "verified", sorted(set(badges(browser)))
    shown = badges(browser)
    assert shown
    assert all(text.startswith("✓ verified: in casetrail/") for text in shown), shown
    checkpoints = browser.find_element(By.ID, "integrity-checkpoints").text
    assert "signature verified" in checkpoints
    assert "root " in checkpoints
    reviewed.check("02-timeline")

    Select(browser.find_element(By.ID, "f-type")).select_by_value("casetrail.service.scheduled")
    submit(browser, "Apply")
    filtered = [
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#timeline td:nth-child(3)")
    ]
    assert filtered
    assert set(filtered) == {"casetrail.service.scheduled"}
    reviewed.check("03-timeline-filtered")

    follow(browser, browser.find_element(By.LINK_TEXT, "As of a moment"))
    set_moment(browser, "at", "2199-01-01T00:00:00")
    Select(browser.find_element(By.ID, "clock")).select_by_value("recorded")
    submit(browser, "Show the case then")
    state = browser.find_element(By.ID, "state").text
    assert "Status closed" in state
    reviewed.check("04-as-of")

    follow(browser, browser.find_element(By.LINK_TEXT, "Compare two moments"))
    set_moment(browser, "first", "1990-01-01T00:00:00")
    set_moment(browser, "second", "2199-01-01T00:00:00")
    Select(browser.find_element(By.ID, "clock")).select_by_value("recorded")
    submit(browser, "Compare")
    assert browser.find_elements(By.CSS_SELECTOR, "#comparison tr.changed mark")
    assert "difference" in browser.find_element(By.ID, "compare-heading").text
    reviewed.check("05-compare")

    follow(browser, browser.find_element(By.LINK_TEXT, "Who saw what"))
    who = [
        cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#access-log td:nth-child(2)")
    ]
    assert who.count("ada-browser") >= 5  # every page above was recorded, this one too
    reviewed.check("06-access-log")
    browser.find_element(By.ID, "d-client").send_keys(demo_casetrail.client_id)
    submit(browser, "Show the accounting")
    assert "Accounting of disclosures" in browser.find_element(By.TAG_NAME, "h1").text
    assert browser.find_element(By.ID, "disclosures")
    reviewed.check("06b-disclosures")

    browser.get(console.url + "/cases/no-such-case")
    assert "Case not found" in browser.find_element(By.TAG_NAME, "h1").text
    reviewed.check("07-unknown-case")
    for shot in sorted(tmp_path.glob("*.png")):
        assert shot.stat().st_size > 1000
    assert len(list(tmp_path.glob("*.png"))) == 8
    assert reviewed.violations == {}


def test_a_corrupted_proof_shows_as_failed(
    browser: WebDriver, demo_casetrail: DemoCasetrail, axe_source: str, tmp_path: Path
) -> None:
    background = demo_casetrail.background
    tampering = background.run(
        start_console(demo_casetrail.settings(), "127.0.0.1", 0, audit_client=TamperedProofs)
    )
    try:
        browser.delete_all_cookies()
        sign_in_and_open(browser, tampering.url, demo_casetrail.case_id, "ada-tamper")
        assert integrity_checked(browser) == "failed"
        shown = badges(browser)
        assert shown
        assert all(text.startswith("✗ FAILED: ") for text in shown), shown
        summary = browser.find_element(By.ID, "integrity-summary").text
        assert f"{len(shown)} FAILED" in summary
        reviewed = Pages(browser, axe_source, tmp_path)
        reviewed.check("08-integrity-failed")
        assert reviewed.violations == {}
    finally:
        background.run(tampering.stop())


def test_rows_showing_another_actor_time_or_case_than_their_bytes_fail(
    browser: WebDriver, demo_casetrail: DemoCasetrail
) -> None:
    """The bytes checked named the row's event id and type only: a row showing another actor,
    role or time, or another case's events, was "✓ verified"."""
    background = demo_casetrail.background
    AnotherCasesRows.demo_case = demo_casetrail.case_id
    for altered, case_id, reasons in (
        (RewrittenRows, demo_casetrail.case_id, ("the actor shown is not the event's",)),
        (AnotherCasesRows, OTHER_CASE, ("the event is not of this case",)),
    ):
        running = background.run(
            start_console(demo_casetrail.settings(), "127.0.0.1", 0, audit_client=altered)
        )
        try:
            browser.delete_all_cookies()
            sign_in_and_open(browser, running.url, case_id, "ada-binding")
            assert integrity_checked(browser) == "failed"
            shown = badges(browser)
            assert shown
            assert not [text for text in shown if text.startswith("✓")], shown
            failed = {text.removeprefix("✗ FAILED: ") for text in shown if "FAILED" in text}
            assert failed == set(reasons), shown
        finally:
            background.run(running.stop())


def test_the_timeline_rows_carry_the_values_their_bytes_are_checked_against() -> None:
    """Times as the canonical bytes hold them: microseconds since the epoch, exactly."""
    entry = audit_pb2.TimelineEntry(event_id="e", event_type="t")
    entry.occurred_at.FromDatetime(datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    entry.recorded_at.FromDatetime(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    row = pages.TimelineRow.of(entry)
    assert row.occurred_micros == 1767323045678901
    assert row.recorded_micros == -1


class PageElsewhere:
    """A page served on another port of 127.0.0.1: of the same site as the console, another
    origin (a sibling host of the agency's domain in production)."""

    def __init__(self, html: str) -> None:
        body = html.encode()

        class Answer(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def accesses_of(demo_casetrail: DemoCasetrail, user: str) -> list[str]:
    with TestClient(
        create_app(demo_casetrail.settings()), base_url="http://127.0.0.1", follow_redirects=True
    ) as reader:
        sign_in_by_client(reader, user="ada-reader")
        return accessed_by(reader, demo_casetrail.case_id, user)


def test_the_export_link_downloads_the_case(
    browser: WebDriver, console: RunningConsole, demo_casetrail: DemoCasetrail
) -> None:
    """Chromium asks for an ``<a download>`` link as ``Sec-Fetch-Dest: empty``: the export was
    refused as not opened from the console."""
    browser.delete_all_cookies()
    sign_in_and_open(browser, console.url, demo_casetrail.case_id, "ada-downloads")
    before = len(accesses_of(demo_casetrail, "ada-downloads"))
    browser.find_element(By.PARTIAL_LINK_TEXT, "Export").click()
    WebDriverWait(browser, 30, poll_frequency=1).until(
        lambda _: len(accesses_of(demo_casetrail, "ada-downloads")) > before
    )


def test_a_page_of_the_same_site_cannot_read_a_case_in_the_auditors_name(
    browser: WebDriver, console: RunningConsole, demo_casetrail: DemoCasetrail
) -> None:
    """Its images of case pages were sent the SameSite=Strict cookie, and audit recorded the
    accesses under the signed-in auditor."""
    case = f"{console.url}/cases/{demo_casetrail.case_id}"
    elsewhere = PageElsewhere(
        "<html><body><p>cat pictures</p>"
        + "".join(
            f'<img src="{case}{path}" alt="">'
            for path in ("/export", "?clock=recorded", "/state?at=2100-01-01T00:00", "/access")
        )
        + "</body></html>"
    )
    try:
        browser.delete_all_cookies()
        sign_in_and_open(browser, console.url, demo_casetrail.case_id, "ada-same-site-victim")
        before = accesses_of(demo_casetrail, "ada-same-site-victim")
        assert before
        browser.get(elsewhere.url)
        WebDriverWait(browser, 30).until(
            lambda shown: shown.execute_script(
                "return Array.from(document.images).every((image) => image.complete)"
            )
        )
        assert accesses_of(demo_casetrail, "ada-same-site-victim") == before
    finally:
        elsewhere.close()


def test_a_link_from_another_site_leaves_the_auditor_signed_in(
    browser: WebDriver, console: RunningConsole, demo_casetrail: DemoCasetrail
) -> None:
    """Such a navigation is sent without the SameSite=Strict cookie: the anonymous session its
    page started set the same cookie, replacing the auditor's, who was signed out."""
    case = f"{console.url}/cases/{demo_casetrail.case_id}"
    # localhost is another site than the console's 127.0.0.1.
    elsewhere = PageElsewhere(
        f'<html><head><meta http-equiv="refresh" content="0;url={case}"></head>'
        "<body>a ticket linking to the case</body></html>"
    )
    try:
        browser.delete_all_cookies()
        sign_in_and_open(browser, console.url, demo_casetrail.case_id, "ada-linked")
        signed_in = browser.get_cookie("casetrail_console")
        assert signed_in is not None
        browser.get(elsewhere.url.replace("127.0.0.1", "localhost"))
        WebDriverWait(browser, 30).until(lambda shown: shown.current_url.startswith(case))
        assert "Open this page from the console" in browser.find_element(By.TAG_NAME, "h1").text
        assert browser.get_cookie("casetrail_console") == signed_in
        # The reader's own click on the refusal opens the page the link asked for.
        browser.find_element(By.ID, "continue").click()
        WebDriverWait(browser, 30).until(lambda shown: "Timeline" in shown.title)
        assert browser.current_url == case
        assert "Signed in as" in browser.find_element(By.TAG_NAME, "header").text
    finally:
        elsewhere.close()
