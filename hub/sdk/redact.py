"""Keep secrets out of error messages and logs.

    redactor = Redactor([api_token, client_secret])
    redactor.redact(f"GET {url} failed: {body}")
    handler.addFilter(RedactingFilter(redactor))

Besides the listed secrets (and their URL-encoded forms), a Redactor always
masks the values of query/form parameters with secret-looking names, JSON
string values under secret-looking keys, `Authorization:` header values,
`Bearer <token>` and the password of `user:password@host` URLs.

Install `RedactingFilter` on *handlers*: a filter on a logger does not see
records propagated from its child loggers (for example `httpx`).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MASK", "SECRET_PARAMS", "RedactingFilter", "Redactor"]

MASK = "***"
_MIN_SECRET_LEN = 4

#: Query/form parameter names whose values are masked (compared lower-cased).
SECRET_PARAMS = frozenset(
    {
        "token", "access_token", "id_token", "refresh_token", "code",
        "api_key", "apikey", "key", "secret", "client_secret", "password", "signature", "sig",
    }
)  # fmt: skip
_PARAM_NAMES = "|".join(sorted(SECRET_PARAMS, key=len, reverse=True))
# name=value in a query string or a form body; the lookbehind keeps `hs_object_key=` etc. intact.
_PARAM_RE = re.compile(rf"(?i)(?<![\w.-])((?:{_PARAM_NAMES})=)[^&#\s\"'<>]*")
# "access_token": "..." in a JSON body; `code`/`key` are left out: vendors use them for error codes.
_JSON_RE = re.compile(
    r"(?i)(\"(?:access_token|refresh_token|id_token|client_secret|password|api_key|apikey|secret|token)\"\s*:\s*\")"
    r"(?:[^\"\\]|\\.)*\""
)
_AUTH_HEADER_RE = re.compile(
    r"(?i)(\b(?:proxy-)?authorization\b[\"']?\s*[:=]\s*[\"']?)(?:(bearer|basic|digest|token|otoken)\s+)?[^\s\"',;}\]]+"
)
_API_KEY_HEADER_RE = re.compile(r"(?i)(\bx-api-key\b[\"']?\s*[:=]\s*[\"']?)[^\s\"',;}\]]+")
_BEARER_RE = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_USERINFO_RE = re.compile(r"(://[^/@:\s]+:)[^/@\s]+@")


def _auth_sub(m: re.Match[str]) -> str:
    scheme = m.group(2)
    return f"{m.group(1)}{scheme} {MASK}" if scheme else f"{m.group(1)}{MASK}"


class Redactor:
    """Masks known secrets and secret-shaped values in text."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._lock = threading.Lock()
        self._secrets: set[str] = set()
        self._secret_re: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Register more secrets (e.g. a freshly refreshed access token)."""
        with self._lock:
            for s in secrets:
                if not s or len(s) < _MIN_SECRET_LEN:
                    continue
                # A token with `/`, `+` or `=` shows up percent-encoded in URLs.
                self._secrets.update({s, quote(s, safe=""), quote_plus(s)})
            if self._secrets:
                # Longest first, so a secret containing another is masked whole.
                alternatives = sorted(self._secrets, key=len, reverse=True)
                self._secret_re = re.compile("|".join(map(re.escape, alternatives)))

    def extended(self, *secrets: str | None) -> Redactor:
        """A new Redactor with these secrets added; this one is left as it is."""
        other = Redactor()
        other._secrets = set(self._secrets)
        other.add(*secrets)
        return other

    def redact(self, text: str) -> str:
        pattern = self._secret_re
        if pattern is not None:
            text = pattern.sub(MASK, text)
        text = _AUTH_HEADER_RE.sub(_auth_sub, text)
        text = _API_KEY_HEADER_RE.sub(rf"\1{MASK}", text)
        text = _BEARER_RE.sub(rf"\1 {MASK}", text)
        text = _PARAM_RE.sub(rf"\1{MASK}", text)
        text = _JSON_RE.sub(rf'\1{MASK}"', text)
        return _USERINFO_RE.sub(rf"\1{MASK}@", text)

    def redact_url(self, url: object) -> str:
        """`url` as text (str or httpx.URL) with secrets, secret parameters and passwords masked."""
        return self.redact(str(url))


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the formatted message, exception and stack text of each record.

    The message is formatted once here (`msg % args`) and `args` cleared, so a
    secret passed as an argument (a URL, a headers dict) is masked too.
    """

    def __init__(self, redactor: Redactor, name: str = "") -> None:
        super().__init__(name)
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redact = self.redactor.redact
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: let the handler report it as usual
            return True
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True
