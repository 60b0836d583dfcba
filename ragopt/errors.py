"""Exceptions raised by ragopt. Every message names what went wrong and where."""

from __future__ import annotations

from collections.abc import Iterable


class RagoptError(Exception):
    """Base class of every error ragopt raises on purpose."""


class ConfigError(RagoptError, ValueError):
    """A configuration is malformed: unknown key, wrong type, value out of range.

    ``path`` is the dotted location of the offending key (``pipeline.stages[0].k1``); a path that cannot be printed
    on one line (a key holding a newline or another control character) is shown quoted, with escapes. ``message``
    is what is wrong there, without the location (for re-raising it under another location)."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        shown = path if str(path).isprintable() else repr(path)
        super().__init__(f"{shown}: {message}" if path else message)


class DataError(RagoptError, ValueError):
    """A dataset file is missing or malformed (the message names file and line)."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """A dataset name could not be resolved; the message lists every place searched."""


class ArtifactError(RagoptError):
    """An artifact (index, embeddings, run) is corrupt, incomplete or built for something else."""


class StageError(RagoptError):
    """A stage was given input it cannot use (missing fields, wrong corpus, not fitted)."""


class BackendUnavailableError(RagoptError, ImportError):
    """An optional backend is not installed; the message says which extra to install."""


class LLMError(RagoptError):
    """An LLM call or model load failed: a model that cannot be loaded, an endpoint that timed out, refused
    (429/5xx), closed the connection or answered malformed JSON, or a capability the model lacks (logprobs).
    The message names the model (and endpoint) and what happened; an API key never appears in it.

    ``partial``, when set, holds the responses of the same batch that did complete (``None`` for the rest), so a
    cache may keep what was paid for."""

    partial: list | None = None


def first_line(e: BaseException, limit: int = 300) -> str:
    """``Type: first line`` of an exception from a library (its first non-blank line, at most ``limit``
    characters; the type alone when it says nothing): what error messages quote, so they stay one line."""
    text = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{type(e).__name__}: {text[:limit]}" if text else type(e).__name__


def unknown_template_error(path: str, template: str, builtins: Iterable[str], fields: str) -> ConfigError:
    """The :class:`ConfigError` (naming ``path``) for a ``template`` that is neither a built-in's name nor a text
    with fields: the closest built-in name if one is close, the ``builtins``, and the ``fields`` a text needs."""
    import difflib

    names = list(builtins)
    hint = difflib.get_close_matches(template, names, n=1)
    return ConfigError(
        path,
        f"unknown template {template!r}"
        + (f"; did you mean {hint[0]!r}?" if hint else "")
        + f" (built-in: {', '.join(names)}; or a text with {fields})",
    )


def check_template_fields(path: str, template: str, required: Iterable[str], optional: Iterable[str] = ()) -> list[str]:
    """The fields of a user ``template`` (``str.format`` syntax), checked: well formed, every ``required`` field
    present, nothing outside ``required`` and ``optional``; otherwise a :class:`ConfigError` naming ``path``."""
    import string

    req, allowed = list(required), [*required, *optional]
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ConfigError(path, f"malformed template ({err}); write literal braces as {{{{ and }}}}") from None

    def braced(names: Iterable[str]) -> str:
        names = ["{" + n + "}" for n in names]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]

    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        shown = ", ".join("{" + f + "}" for f in unknown)
        raise ConfigError(path, f"unknown field(s) {shown} in the template; it may use only {braced(allowed)}")
    missing = [f for f in req if f not in fields]
    if missing:
        raise ConfigError(
            path, f"the template has no {', '.join('{' + f + '}' for f in missing)}: it needs {braced(req)}"
        )
    return fields
