"""Prometheus text exposition (format 0.0.4) for the webhook server, written by hand.

A handful of counters, one histogram and gauges read from the inbox at scrape time do
not justify a dependency (prometheus_client's registry is process-global, which
also fights tests that build several apps).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable

from hub.webhooks.commit import BatchStats
from hub.webhooks.inbox import InboxStats
from hub.webhooks.processor import ProcessingStats

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: the label for a path that names no configured instance (so scanners cannot blow up the series count)
UNKNOWN = "_unknown"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def _num(v: float) -> str:
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v)) if isinstance(v, float) and not v.is_integer() else str(int(v))


class _Histogram:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds


class Metrics:
    """Counters kept by the server; `render` adds the inbox's own gauges."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str]] = Counter()  # (connector, status code)
        self.events: Counter[tuple[str, str]] = Counter()  # (connector, stored|duplicate)
        self.latency: dict[str, _Histogram] = {}  # connector -> seconds to a 2xx

    def request(self, connector: str, status: int, seconds: float) -> None:
        self.requests[(connector, str(status))] += 1
        if 200 <= status < 300:
            self.latency.setdefault(connector, _Histogram()).observe(seconds)

    def stored(self, connector: str, new: int, duplicates: int) -> None:
        if new:
            self.events[(connector, "stored")] += new
        if duplicates:
            self.events[(connector, "duplicate")] += duplicates

    def render(self, inbox: InboxStats | None, batches: BatchStats, processing: ProcessingStats | None = None) -> str:
        out: list[str] = []

        def family(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
            out.append(f"# HELP {name} {help_}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{labels} {_num(v)}" for labels, v in samples)

        family("crmhub_webhook_requests_total", "counter", "Webhook requests by connector instance and HTTP status.",
               ((_labels(connector=c, status=s), n) for (c, s), n in sorted(self.requests.items())))
        family("crmhub_webhook_events_total", "counter",
               "Events in accepted requests: stored (new) or duplicate (already in the inbox).",
               ((_labels(connector=c, result=r), n) for (c, r), n in sorted(self.events.items())))
        out.append("# HELP crmhub_webhook_ack_seconds Time from request to a 2xx (the event is committed by then).")
        out.append("# TYPE crmhub_webhook_ack_seconds histogram")
        for c, h in sorted(self.latency.items()):
            running = 0
            for bound, n in zip((*BUCKETS, math.inf), h.counts, strict=True):
                running += n
                out.append(f"crmhub_webhook_ack_seconds_bucket{_labels(connector=c, le=_num(bound))} {running}")
            out.append(f"crmhub_webhook_ack_seconds_sum{_labels(connector=c)} {_num(h.sum)}")
            out.append(f"crmhub_webhook_ack_seconds_count{_labels(connector=c)} {running}")
        family("crmhub_webhook_commits_total", "counter", "Inbox group commits.", [("", batches.batches)])
        family("crmhub_webhook_committed_rows_total", "counter", "Rows sent in inbox group commits.",
               [("", batches.rows)])
        family("crmhub_webhook_commit_seconds_total", "counter",
               "Seconds spent writing and durably committing inbox batches (divide by commits for the mean).",
               [("", batches.write_seconds)])
        family("crmhub_webhook_commit_failures_total", "counter", "Inbox group commits that failed (answered 503).",
               [("", batches.failed_batches)])
        if inbox is not None:
            family("crmhub_webhook_inbox_depth", "gauge",
                   "Unfinished inbox rows by connector and status (pending, failed = waiting for a retry, dead).",
                   ((_labels(connector=c, status=s), n) for (c, s), n in sorted(inbox.depth.items())))
            family("crmhub_webhook_inbox_oldest_age_seconds", "gauge",
                   "Age of the oldest unfinished row by connector and status; for pending, the processing lag.",
                   ((_labels(connector=c, status=s), a) for (c, s), a in sorted(inbox.oldest_age.items())))
            dead: Counter[str] = Counter()
            for (c, s), n in inbox.depth.items():
                if s == "dead":
                    dead[c] += n
            family("crmhub_webhook_dead_letters", "gauge", "Inbox rows that exhausted their attempts.",
                   ((_labels(connector=c), n) for c, n in sorted(dead.items())))
        if processing is not None:
            family("crmhub_webhook_processed_total", "counter", "Inbox rows processed into the canonical store.",
                   ((_labels(connector=c), n) for c, n in sorted(processing.processed.items())))
            family("crmhub_webhook_processing_failures_total", "counter",
                   "Failed processing attempts of inbox rows (each is retried until it is dead).",
                   ((_labels(connector=c), n) for c, n in sorted(processing.failed.items())))
            family("crmhub_webhook_processed_records_total", "counter", "Records written from processed events.",
                   ((_labels(connector=c), n) for c, n in sorted(processing.records.items())))
            family("crmhub_webhook_stale_records_total", "counter",
                   "Records dropped as older than the version already applied (out-of-order events).",
                   ((_labels(connector=c), n) for c, n in sorted(processing.stale.items())))
            family("crmhub_webhook_processing_batches_total", "counter", "Claimed inbox batches processed.",
                   [("", processing.batches)])
            family("crmhub_webhook_processing_seconds_total", "counter", "Seconds spent processing inbox batches.",
                   [("", processing.seconds)])
        family("crmhub_webhook_inbox_up", "gauge", "1 if the inbox answered this scrape.",
               [("", 1 if inbox is not None else 0)])
        return "\n".join(out) + "\n"
