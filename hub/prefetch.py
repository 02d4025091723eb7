"""Read the next page while the current one is written: a one-thread pipeline.

Network waits and database waits both release the GIL, so overlapping them is
most of the speed of a sync. The queue is bounded, so memory stays at a few pages.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


class _Failure:
    def __init__(self, exc: BaseException):
        self.exc = exc


def prefetch(source: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate `source` in a background thread, `depth` items ahead.

    An exception in the source is re-raised in the consumer at the point it happened.
    Closing the consumer (break, exception) stops the producer at its next item.
    """
    if depth <= 0:
        yield from source
        return
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in source:
                if not put(item):
                    return
            put(_END)
        except BaseException as exc:
            put(_Failure(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None and stop.is_set():
                with contextlib.suppress(Exception):
                    close()

    t = threading.Thread(target=produce, name="crmhub-prefetch", daemon=True)
    t.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        t.join(timeout=30)
