"""The HTTP seam: retries, rate budget, errors and redaction, on a mock transport with injected sleep."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator, Iterator
from email.utils import formatdate

import httpx
import pytest

from hub.sdk.errors import AuthError, FatalError, RateLimited, RetriableError
from hub.sdk.http import (
    IDEMPOTENT,
    HubClient,
    RateLimitHeaders,
    RetryingTransport,
    RetryPolicy,
    build_client,
    parse_retry_after,
    raise_for_status,
)
from hub.sdk.ratelimit import TokenBucket
from hub.sdk.redact import RedactingFilter, Redactor

BASE = "https://api.vendor.test"
TOKEN = "pat-na1-0f9e8d7c-6b5a-4321-9876-abcdefabcdef"
API_KEY = "AK_live_51H8xyzSECRET"
NOW = 1_750_000_000.0  # the injected wall clock

HUBSPOT_RATE_HEADERS = RateLimitHeaders(
    remaining="X-HubSpot-RateLimit-Remaining",
    limit="X-HubSpot-RateLimit-Max",
    interval_ms="X-HubSpot-RateLimit-Interval-Milliseconds",
    reset_epoch=None,
)
AIRCALL_RATE_HEADERS = RateLimitHeaders(
    remaining="X-AircallApi-Remaining",
    limit="X-AircallApi-Limit",
    interval_ms=None,
    reset_epoch="X-AircallApi-Reset",
)

Handler = Callable[[httpx.Request], httpx.Response]


class RecordingBudget:
    def __init__(self) -> None:
        self.acquired = 0
        self.observed: list[dict[str, object]] = []
        self.paused: list[float] = []

    def acquire(self, n: int = 1) -> None:
        self.acquired += n

    def observe(self, *, remaining: int | None, limit: int | None, window_s: float | None) -> None:
        self.observed.append({"remaining": remaining, "limit": limit, "window_s": window_s})

    def pause(self, seconds: float) -> None:
        self.paused.append(seconds)


class Script:
    """A mock vendor: returns (or raises) the scripted outcomes in order, the last one forever."""

    def __init__(self, *outcomes: httpx.Response | type[httpx.TransportError]) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        outcome = self.outcomes[min(len(self.requests), len(self.outcomes)) - 1]
        if isinstance(outcome, type):
            raise outcome(f"boom talking to {request.url}", request=request)
        # A fresh response each time: a response object is consumed once.
        response = httpx.Response(outcome.status_code, headers=outcome.headers, content=outcome.content)
        self.responses.append(response)
        return response

    @property
    def calls(self) -> int:
        return len(self.requests)


class Env:
    def __init__(self) -> None:
        self.sleeps: list[float] = []
        self.jitter_calls: list[tuple[float, float]] = []
        self.budget = RecordingBudget()

    def jitter(self, lo: float, hi: float) -> float:
        self.jitter_calls.append((lo, hi))
        return lo + (hi - lo) * 0.75

    def client(self, script: Handler, **kwargs: object) -> HubClient:
        options: dict[str, object] = {
            "base_url": BASE,
            "transport": httpx.MockTransport(script),
            "sleep": self.sleeps.append,
            "jitter": self.jitter,
            "budget": self.budget,
            "wall_clock": lambda: NOW,
        }
        options.update(kwargs)
        return build_client(**options)  # type: ignore[arg-type]


@pytest.fixture
def env() -> Iterator[Env]:
    yield Env()


# -- retries ------------------------------------------------------------------


def test_429_retry_after_seconds_is_slept_exactly_and_pauses_the_budget(env: Env) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3"}), httpx.Response(200, json={"ok": 1}))
    with env.client(script) as client:
        response = client.get("/things")
    assert response.status_code == 200
    assert response.json() == {"ok": 1}
    assert script.calls == 2
    assert env.sleeps == [3.0]
    assert env.budget.paused == [3.0]
    assert env.budget.acquired == 2  # every attempt asks the budget
    assert env.jitter_calls == []  # the vendor's hint replaces backoff
    assert script.responses[0].is_closed  # drained, so the connection goes back to the pool


def test_retry_after_as_http_date(env: Env) -> None:
    when = formatdate(NOW + 7, usegmt=True)
    script = Script(httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200))
    with env.client(script) as client:
        assert client.get("/things").status_code == 200
    assert env.sleeps == [pytest.approx(7.0)]
    assert env.budget.paused == [pytest.approx(7.0)]


def test_5xx_backs_off_exponentially_with_jitter(env: Env) -> None:
    script = Script(httpx.Response(503), httpx.Response(503), httpx.Response(200))
    with env.client(script) as client:
        assert client.get("/things").status_code == 200
    assert script.calls == 3
    assert env.jitter_calls == [(0.0, 0.5), (0.0, 1.0)]  # full jitter on base * 2**attempt
    assert env.sleeps == [pytest.approx(0.375), pytest.approx(0.75)]
    assert env.budget.paused == []  # only a 429 pauses everybody


def test_backoff_is_capped_by_max_delay(env: Env) -> None:
    script = Script(httpx.Response(502))
    policy = RetryPolicy(max_attempts=5, base_delay=10, max_delay=15)
    with env.client(script, retry=policy) as client:
        client.get("/things")
    assert [hi for _, hi in env.jitter_calls] == [10, 15, 15, 15]


def test_exhausted_5xx_returns_the_last_response(env: Env) -> None:
    script = Script(httpx.Response(503, text="try later"))
    with env.client(script, retry=RetryPolicy(max_attempts=3)) as client:
        response = client.get("/things")
    assert script.calls == 3
    assert len(env.sleeps) == 2
    assert response.status_code == 503
    assert response.text == "try later"
    with pytest.raises(RetriableError) as caught:
        raise_for_status(response)
    assert not isinstance(caught.value, RateLimited)
    assert caught.value.status == 503
    assert "503" in str(caught.value) and "try later" in str(caught.value)


def test_exhausted_429_raises_rate_limited_with_retry_after(env: Env) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "2"}))
    with env.client(script, retry=RetryPolicy(max_attempts=2)) as client:
        response = client.get("/things")
    assert script.calls == 2
    with pytest.raises(RateLimited) as caught:
        raise_for_status(response)
    assert caught.value.retry_after == 2.0
    assert caught.value.status == 429


def test_retry_after_above_the_cap_is_not_slept(env: Env) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}), httpx.Response(200))
    with env.client(script) as client:
        response = client.get("/things")
    assert script.calls == 1
    assert env.sleeps == []
    assert env.budget.paused == []  # blocking every stream for an hour is the engine's call
    with pytest.raises(RateLimited) as caught:
        raise_for_status(response)
    assert caught.value.retry_after == 3600.0


def test_429_without_retry_after_uses_the_vendor_reset_epoch(env: Env) -> None:
    headers = {
        "X-AircallApi-Remaining": "0",
        "X-AircallApi-Limit": "60",
        "X-AircallApi-Reset": str(int(NOW) + 12),
    }
    script = Script(httpx.Response(429, headers=headers), httpx.Response(200))
    with env.client(script, rate_headers=AIRCALL_RATE_HEADERS) as client:
        client.get("/v1/calls")
    assert env.sleeps == [12.0]
    assert env.budget.observed[0] == {"remaining": 0, "limit": 60, "window_s": 12.0}


def test_vendor_reset_epoch_reaches_raise_for_status(env: Env) -> None:
    headers = {"X-AircallApi-Remaining": "0", "X-AircallApi-Reset": str(int(NOW) + 40)}
    script = Script(httpx.Response(429, headers=headers))
    with env.client(script, rate_headers=AIRCALL_RATE_HEADERS, retry=RetryPolicy(max_attempts=1)) as client:
        response = client.get("/v1/calls")
    with pytest.raises(RateLimited) as caught:
        raise_for_status(response)
    assert caught.value.retry_after == 40.0


def test_a_single_attempt_policy_never_retries(env: Env) -> None:
    script = Script(httpx.Response(503), httpx.Response(200))
    with env.client(script, retry=RetryPolicy(max_attempts=1)) as client:
        assert client.get("/things").status_code == 503
    assert script.calls == 1 and env.sleeps == []
    script = Script(httpx.ConnectError, httpx.Response(200))
    with (
        env.client(script, retry=RetryPolicy(max_attempts=1)) as client,
        pytest.raises(RetriableError, match="after 1 attempt"),
    ):
        client.get("/things")
    assert script.calls == 1 and env.sleeps == []


def test_4xx_is_not_retried(env: Env) -> None:
    script = Script(httpx.Response(404), httpx.Response(200))
    with env.client(script) as client:
        assert client.get("/things").status_code == 404
    assert script.calls == 1


def test_connect_error_is_retried_then_raised_as_retriable(env: Env) -> None:
    script = Script(httpx.ConnectError)
    with (
        env.client(script, retry=RetryPolicy(max_attempts=4)) as client,
        pytest.raises(RetriableError) as caught,
    ):
        client.get("/things")
    assert script.calls == 4
    assert len(env.sleeps) == 3
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert "GET https://api.vendor.test/things" in str(caught.value)
    assert "4 attempt" in str(caught.value)


def test_transient_transport_error_then_success(env: Env) -> None:
    script = Script(httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.Response(200))
    with env.client(script) as client:
        assert client.get("/things").status_code == 200
    assert script.calls == 3


def test_unsupported_protocol_is_fatal_and_not_retried(env: Env) -> None:
    script = Script(httpx.UnsupportedProtocol)
    with env.client(script) as client, pytest.raises(FatalError):
        client.get("/things")
    assert script.calls == 1


# -- non-idempotent requests -----------------------------------------------------


def test_post_without_idempotency_is_not_retried_on_500(env: Env) -> None:
    script = Script(httpx.Response(500), httpx.Response(200))
    with env.client(script) as client:
        assert client.post("/things", json={"a": 1}).status_code == 500
    assert script.calls == 1
    assert env.sleeps == []


def test_post_without_idempotency_is_retried_on_429(env: Env) -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "1"}), httpx.Response(201))
    with env.client(script) as client:
        assert client.post("/things", json={"a": 1}).status_code == 201
    assert script.calls == 2
    assert script.requests[1].content == b'{"a":1}'  # the body is resent intact


def test_post_without_idempotency_is_not_retried_after_a_read_timeout(env: Env) -> None:
    script = Script(httpx.ReadTimeout, httpx.Response(201))
    with env.client(script) as client, pytest.raises(RetriableError, match="not idempotent"):
        client.post("/things", json={"a": 1})
    assert script.calls == 1


def test_post_is_retried_after_a_connect_error_since_nothing_was_sent(env: Env) -> None:
    script = Script(httpx.ConnectError, httpx.Response(201))
    with env.client(script) as client:
        assert client.post("/things", json={"a": 1}).status_code == 201
    assert script.calls == 2


def test_post_with_idempotency_key_is_retried_on_500(env: Env) -> None:
    script = Script(httpx.Response(500), httpx.Response(200))
    with env.client(script) as client:
        response = client.post("/things", json={"a": 1}, headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 200
    assert script.calls == 2
    assert script.requests[1].headers["Idempotency-Key"] == "k-1"


def test_post_marked_idempotent_is_retried_on_5xx_and_timeouts(env: Env) -> None:
    script = Script(httpx.Response(502), httpx.ReadTimeout, httpx.Response(200))
    with env.client(script) as client:
        response = client.post("/search", json={"q": 1}, extensions={IDEMPOTENT: True})
    assert response.status_code == 200
    assert script.calls == 3


# -- rate headers and the shared budget ----------------------------------------


def test_hubspot_rate_headers_reach_the_budget(env: Env) -> None:
    headers = {
        "X-HubSpot-RateLimit-Remaining": "1",
        "X-HubSpot-RateLimit-Max": "100",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    }
    script = Script(httpx.Response(200, headers=headers))
    with env.client(script, rate_headers=HUBSPOT_RATE_HEADERS) as client:
        client.get("/crm/v3/objects/contacts")
    assert env.budget.observed == [{"remaining": 1, "limit": 100, "window_s": 10.0}]


def test_responses_without_rate_headers_are_not_observed(env: Env) -> None:
    script = Script(httpx.Response(200))  # HubSpot search sends none
    with env.client(script, rate_headers=HUBSPOT_RATE_HEADERS) as client:
        client.post("/crm/v3/objects/contacts/search", json={})
    assert env.budget.observed == []


def test_a_token_bucket_pause_and_the_transport_sleep_do_not_add_up() -> None:
    now = [0.0]

    def clock() -> float:
        return now[0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(None, 1, clock=clock, sleep=sleep)
    script = Script(httpx.Response(429, headers={"Retry-After": "2"}), httpx.Response(200))
    with build_client(
        base_url=BASE, transport=httpx.MockTransport(script), budget=bucket, sleep=sleep
    ) as client:
        assert client.get("/things").status_code == 200
        assert now[0] == pytest.approx(2.0)
        client.get("/things")
    assert now[0] == pytest.approx(2.0)


def test_low_remaining_slows_the_next_requests_through_a_token_bucket() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    bucket = TokenBucket(None, 1, clock=lambda: now[0], sleep=sleep)
    headers = {
        "X-HubSpot-RateLimit-Remaining": "2",
        "X-HubSpot-RateLimit-Max": "110",
        "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
    }
    script = Script(httpx.Response(200, headers=headers))
    transport = httpx.MockTransport(script)
    with build_client(
        transport=transport, budget=bucket, rate_headers=HUBSPOT_RATE_HEADERS, sleep=sleep
    ) as client:
        client.get(f"{BASE}/a")
        assert now[0] == 0.0
        client.get(f"{BASE}/b")
    assert now[0] == pytest.approx(5.0)  # 10 s window / 2 remaining, before the vendor says 429


# -- errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, AuthError), (403, AuthError), (404, FatalError), (422, FatalError), (500, RetriableError)],
)
def test_raise_for_status_maps_statuses_to_recovery(status: int, error: type[Exception]) -> None:
    response = httpx.Response(status, text="nope", request=httpx.Request("GET", f"{BASE}/x"))
    with pytest.raises(error) as caught:
        raise_for_status(response)
    if status == 404:
        assert not isinstance(caught.value, AuthError)
    assert f"GET {BASE}/x -> {status}" in str(caught.value)


def test_401_is_an_auth_error_and_not_retried(env: Env) -> None:
    script = Script(httpx.Response(401, json={"message": "expired"}), httpx.Response(200))
    with env.client(script) as client:
        response = client.get("/things")
    assert script.calls == 1
    with pytest.raises(AuthError, match="expired"):
        raise_for_status(response)


def test_success_is_returned_as_is() -> None:
    response = httpx.Response(200, json={"a": 1}, request=httpx.Request("GET", BASE))
    assert raise_for_status(response) is response


def test_error_message_keeps_only_the_start_of_the_body() -> None:
    response = httpx.Response(400, text="x" * 5000, request=httpx.Request("POST", BASE))
    with pytest.raises(FatalError) as caught:
        raise_for_status(response)
    assert 300 <= str(caught.value).count("x") <= 310


# -- secrets ----------------------------------------------------------------------


def test_secrets_never_reach_error_messages(env: Env) -> None:
    echo = f"bad request: token {TOKEN} and key {API_KEY}, Authorization: Bearer {TOKEN}"
    script = Script(httpx.Response(500, text=echo))
    headers = {"Authorization": f"Bearer {TOKEN}"}  # no `secrets=`: the header value is added
    with env.client(script, headers=headers, retry=RetryPolicy(max_attempts=2)) as client:
        response = client.get("/v1/things", params={"api_key": API_KEY, "q": "x"})
    with pytest.raises(RetriableError) as caught:
        raise_for_status(response)
    message = str(caught.value)
    assert TOKEN not in message and API_KEY not in message
    assert "api_key=***" in message and "q=x" in message
    assert "bad request" in message


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


def test_a_token_set_by_an_auth_flow_is_masked_too(env: Env) -> None:
    refreshed = "oauth-at-Zk29fj38GhQ"  # the factory never saw it: an httpx.Auth set it
    script = Script(httpx.Response(403, text=f"token {refreshed} lacks scope"))
    with env.client(script, auth=_BearerAuth(refreshed)) as client:
        response = client.get("/v1/things")
    assert script.requests[0].headers["Authorization"] == f"Bearer {refreshed}"
    with pytest.raises(AuthError) as caught:
        raise_for_status(response)
    assert refreshed not in str(caught.value)
    assert "lacks scope" in str(caught.value)


def test_secrets_never_reach_transport_error_messages(env: Env) -> None:
    script = Script(httpx.ConnectError)  # its message carries the full URL
    with (
        env.client(script, secrets=[API_KEY], retry=RetryPolicy(max_attempts=2)) as client,
        pytest.raises(RetriableError) as caught,
    ):
        client.get(f"/v1/things?APIKEY={API_KEY}&other={API_KEY}")
    assert API_KEY not in str(caught.value)


def test_secrets_never_reach_logs_with_the_redacting_filter(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    script = Script(httpx.Response(503), httpx.Response(200))
    with env.client(script, headers={"Authorization": f"Bearer {TOKEN}"}, secrets=[API_KEY]) as client:
        caplog.handler.addFilter(RedactingFilter(client.redactor))
        client.get("/v1/things", params={"api_key": API_KEY})  # httpx logs every request URL at INFO
        log = logging.getLogger("crmhub.test")
        log.info("sending with headers %s", dict(client.headers))
        try:
            raise ValueError(f"vendor rejected {TOKEN}")
        except ValueError:
            log.exception("failed with key %s", API_KEY)
    assert any(r.name == "httpx" for r in caplog.records)
    assert any(r.name == "hub.sdk.http" and "retrying GET" in r.getMessage() for r in caplog.records)
    assert TOKEN not in caplog.text
    assert API_KEY not in caplog.text
    assert "api_key=***" in caplog.text
    assert "ValueError: vendor rejected ***" in caplog.text


def test_redactor_masks_secret_shapes() -> None:
    r = Redactor(["s3cr3t/with+plus", "abc"])  # "abc" is too short to be a secret
    assert r.redact("abc s3cr3t/with+plus") == "abc ***"
    assert r.redact_url("https://x.test/p?t=s3cr3t%2Fwith%2Bplus") == "https://x.test/p?t=***"
    assert r.redact("?Access_Token=zz&code=c0de&limit=10") == "?Access_Token=***&code=***&limit=10"
    assert r.redact("grant_type=refresh_token&refresh_token=rt1&client_secret=cs1") == (
        "grant_type=refresh_token&refresh_token=***&client_secret=***"
    )
    assert r.redact("{'authorization': 'Basic dXNlcjpwYXNz'}") == "{'authorization': 'Basic ***'}"
    assert r.redact("Authorization: Bearer eyJ.a.b") == "Authorization: Bearer ***"
    assert r.redact("sent bearer eyJhbGciOi.x.y ok") == "sent bearer *** ok"
    assert (
        r.redact('{"access_token": "at-1", "code": "INVALID"}')
        == '{"access_token": "***", "code": "INVALID"}'
    )
    assert r.redact("https://user:pw@host.test/x") == "https://user:***@host.test/x"
    assert r.redact("hs_object_key=1&monkey=2") == "hs_object_key=1&monkey=2"


def test_redactor_learns_new_secrets() -> None:
    r = Redactor()
    r.add("refreshed-token-1")
    assert r.redact("x refreshed-token-1 y") == "x *** y"


# -- the factory ----------------------------------------------------------------


def test_build_client_defaults(env: Env) -> None:
    script = Script(httpx.Response(200))
    with env.client(script, timeout=30.0) as client:
        client.get("/x")
        assert client.timeout.connect == 10.0
        assert client.timeout.read == 30.0
        assert isinstance(client._transport, RetryingTransport)
    assert script.requests[0].headers["User-Agent"] == "crmhub/0.1"
    with env.client(script, timeout=5.0, user_agent="crmhub-test") as client:
        client.get("/x")
        assert client.timeout.connect == 5.0
    assert script.requests[1].headers["User-Agent"] == "crmhub-test"


def test_parse_retry_after() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after(formatdate(NOW - 60, usegmt=True), now=NOW) == 0.0


def test_a_read_response_is_freed_without_the_cycle_collector() -> None:
    """httpx binds a response's stream back to the response; the hub's client breaks that
    cycle once the body is read, so a page's body goes with its last reference."""
    import gc
    import weakref

    body = b"x" * 1_000_000
    client = build_client(base_url="https://vendor.test",
                          transport=httpx.MockTransport(lambda req: httpx.Response(200, content=body)))
    gc.disable()
    try:
        resp = client.get("/page")
        assert resp.content == body and resp.read() == body
        ref = weakref.ref(resp)
        del resp
        assert ref() is None
    finally:
        gc.enable()
        client.close()
