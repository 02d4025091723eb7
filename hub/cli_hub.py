"""The hub a `crmhub` command works on: opened from `--config`, a configuration or schema
mistake reported as one clear message with exit code 2, closed however the command ends.
Shared by `hub.cli` and `hub.migrate.cli` (which cannot import `hub.cli`: under
`python -m hub.cli` that module is `__main__`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape

from hub.config import ConfigError
from hub.mapping import MappingLoadError
from state.custom import CustomSchemaError
from state.db import SchemaOutOfDate

if TYPE_CHECKING:
    from hub.app import Hub

__all__ = ["open_hub"]


@contextmanager
def open_hub(config: str | None, err: Console, *, ready: bool = True,
             errors: tuple[type[Exception], ...] = ()) -> Iterator[Hub]:
    """`errors`: the command's own mistakes to report the same way (e.g. a wave's)."""
    from hub.app import Hub, tune_gc  # here, so `crmhub --help` does not load the engine

    mistakes: tuple[type[Exception], ...] = (MappingLoadError, SchemaOutOfDate, CustomSchemaError, *errors)
    h: Hub | None = None
    try:
        h = Hub.from_path(config)
        if ready:
            h.ready()
        tune_gc()
        yield h
    except ConfigError as e:
        err.print(f"[red]{escape(e.source)}: invalid configuration[/red]")
        for p in e.problems:
            err.print(f"  - {p}", markup=False)
        raise typer.Exit(2) from None
    except mistakes as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None
    finally:
        if h is not None:
            h.close()
