"""URLs as they may be shown in output, logs and errors: credentials hidden."""

from __future__ import annotations

import re

__all__ = ["redact_url"]

# query parameters whose values are secrets by their name (?api_key=..., ?token=..., ?sig=...)
_SECRET_PARAM = re.compile(
    r"([?&](?:[\w.-]*[_.-])?(?:key|apikey|token|secret|password|passwd|pwd|sig|signature|auth)=)[^&#]*", re.I
)


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and the values of secret-named query parameters replaced by
    ``***`` (``postgresql://bob:***@host/db``, ``https://h/mcp?token=***``)."""
    shown = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", str(url))
    return _SECRET_PARAM.sub(r"\1***", shown)
