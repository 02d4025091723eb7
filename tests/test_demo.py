"""`crmhub demo` (the README's first command) runs offline and ends with a contact's timeline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hub.cli import app


def test_the_demo_syncs_and_prints_a_timeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "160")
    res = CliRunner().invoke(app, ["demo", "--contacts", "150", "--workdir", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "demo finished" in out and "with errors" not in out
    # the change log's records are named by the key one asks `crmhub explain` with
    why = out[out.index("the change log says"):out.index("timeline")]
    assert re.search(r"contact \S+@\S+ update by hubspot_demo: ", why) or re.search(r"account \S+\.\S+ update", why), why
    timeline = out[out.index("timeline"):]
    order = [timeline.index(s) for s in ("Pricing question", "Re: Pricing question", "Pricing walkthrough",
                                         "twilio_demo")]
    assert order == sorted(order), "the timeline is in time order"
