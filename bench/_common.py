"""Shared pieces of the benchmarks: a sandbox process, a fresh database, a measured child run."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN = os.environ.get("CRMHUB_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class Sandbox:
    """`python -m connectors.hubspot.sandbox` as its own process (its CPU is not ours)."""

    def __init__(self, contacts: int, token: str = "bench-token", **opts: Any):
        args = [sys.executable, "-m", "connectors.hubspot.sandbox", "--contacts", str(contacts), "--token", token]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.url = json.loads(line)["url"]
        self.admin = httpx.Client(base_url=self.url, timeout=120)

    def stats(self) -> dict[str, Any]:
        return dict(self.admin.get("/_sandbox/stats").json())

    def reset_stats(self) -> None:
        self.admin.post("/_sandbox/reset-stats")

    def modify(self, type_: str, count: int) -> list[str]:
        return list(self.admin.post("/_sandbox/modify", json={"type": type_, "count": count}).json()["ids"])

    def close(self) -> None:
        self.admin.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def fresh_database(kind: str, workdir: Path, name: str = "crmhub_bench") -> str:
    if kind == "sqlite":
        db = workdir / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return f"sqlite:///{db}"
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        c.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return make_url(PG_ADMIN).set(database=name).render_as_string(hide_password=False)


def write_config(workdir: Path, database: str, sandbox_url: str, streams: list[str], name: str = "hubspot_bench",
                 token: str = "bench-token") -> Path:
    cfg = {
        "database": database,
        "connectors": {name: {
            "kind": "hubspot", "base_url": sandbox_url, "auth": {"token": token}, "streams": streams,
            # the sandbox has no rate limit; HubSpot's real one (19/s) would cap a sync at ~1,900 records/s
            "requests_per_second": 100_000, "search_lag_ms": 0,
        }},
    }
    p = workdir / "crmhub.yaml"
    p.write_text(json.dumps(cfg))  # JSON is YAML
    return p


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float
    output: dict[str, Any]
    #: CPU seconds (user + system) of the crmhub child, and of the local PostgreSQL server meanwhile
    cpu: float = 0.0
    pg_cpu: float | None = None

    def cpu_line(self, n: int, unit: str = "record") -> str:
        """Where the time went, per `unit`: the crmhub process's CPU and PostgreSQL's."""
        line = f"CPU per {unit}: crmhub {self.cpu / n * 1e6:,.0f} us"
        if self.pg_cpu is not None:
            line += f", PostgreSQL {self.pg_cpu / n * 1e6:,.0f} us"
        return line + f" (wall {self.seconds / n * 1e6:,.0f} us, {os.cpu_count()} cores here)"


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _postmaster() -> int | None:
    """The local PostgreSQL server's process, if this machine runs it (Linux /proc)."""
    try:
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    cmd = (d / "cmdline").read_bytes().split(b"\0")[0]
                except OSError:
                    continue
                if cmd.endswith(b"/postgres") and b"-D" in (d / "cmdline").read_bytes():
                    return int(d.name)
    except OSError:
        return None
    return None


def pg_cpu_seconds() -> float | None:
    """CPU the server has used so far: the postmaster's reaped children (backends that have
    exited) plus its live ones (background workers, open sessions)."""
    pm = _postmaster()
    if pm is None:
        return None
    try:
        f = (Path("/proc") / str(pm) / "stat").read_text().rsplit(")", 1)[1].split()
        total = sum(int(x) for x in f[11:15])  # utime stime cutime cstime
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                g = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(g[1]) == pm:
                total += int(g[11]) + int(g[12])
    except OSError:
        return None
    return total / _TICK


#: the child reports its own peak RSS (VmHWM) as it exits. The kernel's rusage for a child
#: counts the parent's resident set at fork time too (the old mm's high-water mark survives
#: exec), so a bench holding a large in-process sandbox would be charged for it.
_CHILD = ("import atexit, os, runpy, sys\n"
          "def _hwm():\n"
          "    kb = next(l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
          "    open(os.environ['CRMHUB_BENCH_HWM'], 'w').write(kb)\n"
          "atexit.register(_hwm)\n"
          "sys.argv[0] = 'crmhub'\n"
          "runpy.run_module('hub.cli', run_name='__main__', alter_sys=True)\n")


def run_cli(args: list[str], config: Path, profile: str | None = None) -> Measured:
    """Run `crmhub ARGS --json` as a child; wall clock and the child's own peak RSS.

    With `profile`, the child runs under cProfile and writes its statistics there."""
    run = ["-m", "cProfile", "-o", profile, "-m", "hub.cli"] if profile else ["-c", _CHILD]
    # e.g. CRMHUB_BENCH_WRAP="py-spy record --gil -f raw -o /tmp/spy.txt --": a sampler around the child
    wrap = shlex.split(os.environ.get("CRMHUB_BENCH_WRAP", ""))
    with tempfile.TemporaryFile() as out_f, tempfile.TemporaryFile() as err_f, \
            tempfile.NamedTemporaryFile(suffix=".hwm") as hwm_f:
        pg0 = pg_cpu_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen([*wrap, sys.executable, *run, "--config", str(config), *args], cwd=ROOT, stdout=out_f,
                             stderr=err_f, env={**os.environ, "CRMHUB_BENCH_HWM": hwm_f.name})
        _pid, status, usage = os.wait4(p.pid, 0)
        seconds = time.perf_counter() - t0
        time.sleep(0.5)  # the child's server sessions end (and are reaped) just after it does
        pg1 = pg_cpu_seconds()
        p.returncode = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        out, err = out_f.read().decode(), err_f.read().decode()
        reported = Path(hwm_f.name).read_text().strip()
    if wrap:  # the sampler's own lines ("py-spy> ...") share the child's stdout
        out = "\n".join(line for line in out.splitlines() if not line.startswith("py-spy> "))
    # under cProfile nothing reports: rusage, an over-estimate (see _CHILD)
    peak_mb = int(reported) / 1024 if reported else usage.ru_maxrss / 1024
    if p.returncode != 0:
        raise SystemExit(f"crmhub {' '.join(args)} failed ({p.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
    try:
        doc = json.loads(out) if out.strip() else {}
    except json.JSONDecodeError:
        doc = {"raw": out[-2000:]}
    pg = pg1 - pg0 if pg0 is not None and pg1 is not None else None
    return Measured(seconds, peak_mb, doc, usage.ru_utime + usage.ru_stime, pg)
