"""Twilio cassettes (fixtures/twilio) replayed through the connectors
with vcrpy, `record_mode="none"`: a request no interaction matches fails, nothing reaches the
network. The cassettes were composed from Twilio's documented examples (see fixtures/twilio/README.md
and each cassette's header), not recorded."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import vcr
import yaml

from hub.config import parse_config
from hub.registry import ConnectorFactory
from hub.sdk import Connector, Page

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TWILIO_AC = "AC" + "X" * 32


#: what a leaked credential looks like in a cassette or payload of these vendors
CREDENTIAL_LOOKING = {
    "a Basic or Bearer credential": re.compile(r"(?i)\b(basic|bearer)\s+[a-z0-9._~+/=-]{8,}"),
    # Twilio's Account and API key SIDs are AC/SK + 32 hex digits; the docs' placeholders are X's
    "a real-looking Account or API key SID": re.compile(r"\b(AC|SK)[0-9a-f]{32}\b"),
    "an auth token or API key secret (32 hex digits)": re.compile(r"(?<![0-9A-Za-z])[0-9a-f]{32}(?![0-9A-Za-z])"),
    "a secret-named key": re.compile(r"(?i)[\"']?\b(auth_token|api_token|access_token|client_secret|password)\b[\"']?\s*[:=]"),
}
CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-twilio-signature"}


def credential_problems(path: Path, *placeholders: str) -> list[str]:
    """What in a fixture looks like a credential; `placeholders`: the tests' own fake ones (the
    replaying VCR filters them out, so they must not be in the file either)."""
    text = path.read_text(encoding="utf-8")
    problems = [f"{what}: {m.group(0)!r}" for what, rx in CREDENTIAL_LOOKING.items() for m in rx.finditer(text)]
    for fake in placeholders:
        for form in (fake, base64.b64encode(fake.encode()).decode()):
            if form in text:
                problems.append(f"the test's credential {form!r}")
    if path.suffix == ".yaml":
        for n, item in enumerate(yaml.safe_load(text).get("interactions") or []):
            for side in ("request", "response"):
                names = {str(h).lower() for h in (item[side].get("headers") or {})}
                problems += [f"interaction {n} {side} has a {h} header" for h in sorted(names & CREDENTIAL_HEADERS)]
    return problems


def fixture_files(folder: str) -> list[Path]:
    return sorted(p for p in (FIXTURES / folder).iterdir() if p.suffix in (".yaml", ".json"))


def replayer(folder: str) -> vcr.VCR:
    return vcr.VCR(cassette_library_dir=str(FIXTURES / folder), record_mode="none",
                   match_on=["method", "scheme", "host", "port", "path", "query"], filter_headers=["authorization"])


def no_retry(seconds: float) -> None:
    raise AssertionError(f"a replay should need no retry (asked to sleep {seconds}s)")


def build(kind: str, **block: Any) -> Connector:
    cfg = parse_config({"connectors": {"x": {"kind": kind, **block}}})
    return ConnectorFactory(cfg, sleep=no_retry).build("x")


def read_all(conn: Connector) -> list[Page]:
    try:
        return list(conn.read("calls", None))
    finally:
        conn.close()


def test_twilio_first_scan_replays_to_two_calls_and_a_cursor() -> None:
    conn = build("twilio", auth={"account_sid": TWILIO_AC, "auth_token": "placeholder-token"},
                 start_date="2010-08-31")
    with replayer("twilio").use_cassette("calls_first_scan.yaml") as cassette:
        pages = read_all(conn)
    assert cassette.all_played and cassette.play_count == 2 == len(pages)
    first, second = (r.activity for p in pages for r in p.records)
    assert first is not None and second is not None
    assert (second.external_id, second.status, second.direction, second.duration_s) == (
        "CA" + "X" * 32, "completed", "inbound", 15)
    assert (second.occurred_at, second.ended_at, second.updated_at) == (
        "2010-08-31T20:36:29Z", "2010-08-31T20:36:44Z", "2010-08-31T20:36:44Z")
    assert [(p.role, p.phone) for p in second.participants] == [("caller", "+15017122661"), ("callee", "+14155551212")]
    assert second.details["recordings_url"] == (
        f"https://api.twilio.com/2010-04-01/Accounts/{TWILIO_AC}/Calls/{'CA' + 'X' * 32}/Recordings.json")
    assert (first.status, first.direction) == ("missed", "outbound")
    final = pages[-1].next_cursor
    assert final is not None and (final["gen"], final["day"]) == (1, "2010-08-31") and len(final["seen"]) == 2


def test_no_secret_in_any_twilio_cassette() -> None:
    files = fixture_files("twilio")
    assert files
    for path in files:
        # ACXXX... (the Account SID throughout) is Twilio's documentation placeholder, not an account
        assert credential_problems(path, "placeholder-token", f"{TWILIO_AC}:placeholder-token") == [], path.name


def test_the_credential_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    leaky = tmp_path / "leaky.yaml"
    sid, secret = "AC" + "0123456789abcdef" * 2, "fedcba9876543210" * 2
    leaky.write_text(yaml.safe_dump({"version": 1, "interactions": [{
        "request": {"method": "GET", "uri": f"https://api.twilio.com/2010-04-01/Accounts/{sid}/Calls.json",
                    "body": f"auth_token={secret}", "headers": {"Authorization": [
                        "Basic " + base64.b64encode(f"{sid}:{secret}".encode()).decode()]}},
        "response": {"status": {"code": 200, "message": "OK"}, "headers": {}, "body": {"string": "{}"}}}]}))
    found = " ".join(credential_problems(leaky, secret))
    for what in ("a Basic or Bearer credential", "a real-looking Account or API key SID", "32 hex digits",
                 "a secret-named key", "the test's credential", "request has a authorization header"):
        assert what in found, what
