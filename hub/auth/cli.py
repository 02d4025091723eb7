"""`crmhub auth`: log in (authorization code, loopback redirect), show token state, log out, make a key.

Mounted by `hub.cli` as `app.add_typer(auth_app, name="auth")`; the commands reach the hub through
`hub.cli._hub` (imported when they run, since `hub.cli` imports this module).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console

__all__ = ["auth_app"]

auth_app = typer.Typer(help="OAuth tokens: log in, see their state, log out, make a key.", no_args_is_help=True)
out = Console()
err = Console(stderr=True)

SubjectOpt = Annotated[str, typer.Option("--subject", help="whose token: a mailbox or user ('' = the instance)")]


def _hub() -> Any:
    from hub.cli import _hub as open_hub

    return open_hub()


@auth_app.command("login")
def login_cmd(
    connector: Annotated[str, typer.Argument(help="the connector instance (its config has an `oauth` block)")],
    subject: SubjectOpt = "",
    browser: Annotated[bool, typer.Option("--browser/--no-browser", help="open the URL in a browser")] = True,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the redirect")] = 300.0,
) -> None:
    """Authorise a connector in a browser (authorization code + PKCE, loopback redirect); the token is
    stored encrypted with CRMHUB_SECRET_KEY."""
    import webbrowser

    from hub.auth.crypto import SecretKeyError
    from hub.auth.login import LoginError, login
    from hub.sdk.errors import ConnectorError
    from hub.sdk.oauth import find_oauth_settings

    with _hub() as h:
        conf = h.factory.configs.get(connector)
        if conf is None:
            err.print(f"[red]error:[/red] no connector instance {connector!r} in the config "
                      f"(have: {', '.join(h.factory.configs) or 'none'})")
            raise typer.Exit(2)
        settings = find_oauth_settings(conf)
        if settings is None:
            err.print(f"[red]error:[/red] connectors.{connector} has no `oauth` block: it authenticates with a "
                      "token or key from the config, which needs no login")
            raise typer.Exit(2)
        try:
            h.token_store.cipher  # noqa: B018 - fail on a missing key before the person logs in
            stored = login(settings, h.token_store, connector, subject=subject,
                           open_browser=webbrowser.open if browser else None,
                           announce=lambda text: out.print(text, markup=False, highlight=False),
                           timeout_s=timeout, transport=h.factory.transport)
        except (LoginError, SecretKeyError, ConnectorError) as e:
            err.print(f"[red]login failed:[/red] {e}", markup=True)
            raise typer.Exit(1) from None
        who = f"{connector}" + (f" ({subject})" if subject else "")
        out.print(f"[green]logged in[/green]: {who}; token stored encrypted (version {stored.version})")


@auth_app.command("status")
def status_cmd(as_json: Annotated[bool, typer.Option("--json", help="print one JSON document")] = False) -> None:
    """Each stored token: when it expires, and whether it needs re-authorisation (and why)."""
    from hub.cli import _dump
    from hub.tables import table

    with _hub() as h:
        rows = h.token_store.status()
        if as_json:
            _dump({"tokens": rows})
            return
        t = table("connector", "subject", "expires", "updated", "version", "state")
        for r in rows:
            state = f"[red]needs re-authorisation[/red]: {r['reauth_reason']}" if r["needs_reauth"] else "ok"
            t.add_row(r["connector"], r["subject"] or "-", str(r["expires_at"] or "-")[:19],
                      str(r["updated_at"])[:19], str(r["version"]), state)
        out.print(t)


@auth_app.command("logout")
def logout_cmd(connector: Annotated[str, typer.Argument()], subject: Annotated[
        str | None, typer.Option("--subject", help="only this subject (default: all of the connector's)")] = None,
) -> None:
    """Forget a connector's stored tokens (revoke them at the vendor too, if you want them dead)."""
    with _hub() as h:
        n = h.token_store.delete(connector, subject)
        out.print(f"{n} token(s) deleted")


@auth_app.command("keygen")
def keygen_cmd() -> None:
    """Print a new key for CRMHUB_SECRET_KEY (32 random bytes, URL-safe base64)."""
    from hub.auth.crypto import new_key

    print(new_key())
