"""Pipelines as YAML files, loadable by name or path.

A pipeline file looks like::

    name: bm25
    description: BM25 with bm25s, k1=0.9 b=0.4
    pipeline:            # one component config, or a list of stage configs (a Pipeline)
      - type: bm25
        k1: 0.9

A name (``bm25``) is looked up as ``<name>.yaml`` in ``$RAGOPT_PIPELINE_PATH`` (os.pathsep-separated),
``./pipelines``, the ``pipelines/`` folder of the ragopt checkout, and ``<prefix>/share/ragopt/pipelines``
(where a wheel installs them).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml

from ragopt._io import atomic_write_text, not_a_file
from ragopt.config import Component, from_config
from ragopt.errors import ConfigError
from ragopt.pipeline import Pipeline, Stage

__all__ = [
    "load_pipeline",
    "save_pipeline",
    "pipeline_from_dict",
    "pipeline_to_dict",
    "pipeline_search_path",
    "list_pipelines",
    "read_yaml",
    "parse_yaml",
]

_TOP_KEYS = ("name", "description", "pipeline")


def pipeline_search_path() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("RAGOPT_PIPELINE_PATH", "").split(os.pathsep) if p]
    dirs += [
        Path.cwd() / "pipelines",
        Path(__file__).resolve().parents[1] / "pipelines",
        Path(sys.prefix) / "share" / "ragopt" / "pipelines",
    ]
    seen, out = set(), []
    for d in dirs:
        r = d.resolve()
        if r not in seen:
            seen.add(r)
            out.append(d)
    return out


def list_pipelines() -> dict[str, Path]:
    """Every named pipeline on the search path (first one wins)."""
    found: dict[str, Path] = {}
    for d in pipeline_search_path():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")):
                found.setdefault(f.stem, f)
    return found


def read_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors name the file, line and column (one line: the CLI prints it as is)."""
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text (byte {e.start}: {e.reason})") from None
    except OSError as e:
        raise ConfigError(str(path), f"cannot read: {e}") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load(text)``; a syntax error is a one-line ConfigError at ``where`` (with line and column)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        if mark is not None:
            where = f"{where}:{mark.line + 1}:{mark.column + 1}"
        elif isinstance(getattr(e, "position", None), int):  # a reader error: a character YAML does not allow
            where = f"{where}: character {e.position + 1}"
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or str(e).split("\n")[0]
        raise ConfigError(where, f"invalid YAML: {' '.join(str(problem).split())}") from None


def resolve_pipeline_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists() or os.sep in str(name_or_path):
        if not p.is_file():
            raise ConfigError(str(p), not_a_file(p, "pipeline file"))
        return p
    for d in pipeline_search_path():
        f = d / f"{name_or_path}.yaml"
        if f.is_file():
            return f
    known = ", ".join(sorted(list_pipelines())) or "none"
    raise ConfigError(
        "pipeline",
        f"no pipeline named {str(name_or_path)!r} (known: {known}); looked in "
        + ", ".join(str(d) for d in pipeline_search_path()),
    )


def pipeline_from_dict(data: Any, source: str = "pipeline") -> Stage:
    """Build a stage from a parsed pipeline document (``{name, description, pipeline}``) or a bare config."""
    if isinstance(data, list):
        data = {"pipeline": data}
    if not isinstance(data, dict):
        raise ConfigError(source, f"expected a mapping with a 'pipeline' key, got {type(data).__name__}")
    if "pipeline" not in data:
        if "type" in data:  # a bare component config
            stage = from_config(data, path=source)
        else:
            raise ConfigError(source, "missing 'pipeline' key")
    else:
        for key in data:
            if key not in _TOP_KEYS:
                raise ConfigError(f"{source}:{key}", f"unknown top-level key (known: {', '.join(_TOP_KEYS)})")
        spec = data["pipeline"]
        if isinstance(spec, list):
            spec = {"type": "pipeline", "stages": spec}
        stage = from_config(spec, path=f"{source}:pipeline")
    if not isinstance(stage, Stage):
        raise ConfigError(source, f"component {stage.type_name!r} is not a pipeline stage")
    return stage


def pipeline_to_dict(stage: Component, name: str | None = None, description: str | None = None) -> dict:
    out: dict[str, Any] = {}
    if name:
        out["name"] = name
    if description:
        out["description"] = description
    cfg = stage.to_config()
    out["pipeline"] = cfg["stages"] if isinstance(stage, Pipeline) else cfg
    return out


def load_pipeline(name_or_path: str | os.PathLike) -> Stage:
    """Load a pipeline by name (``bm25``) or path (``pipelines/bm25.yaml``)."""
    path = resolve_pipeline_path(name_or_path)
    return pipeline_from_dict(read_yaml(path), source=str(path))


def save_pipeline(
    stage: Component, path: str | os.PathLike, name: str | None = None, description: str | None = None
) -> Path:
    """Write ``stage`` as a pipeline YAML (atomically); ``load_pipeline(path)`` gives back an equal object."""
    if not isinstance(stage, Component):  # was: "'str' object has no attribute 'to_config'"
        raise ConfigError("pipeline", f"save_pipeline takes a component, got {type(stage).__name__}")
    text = yaml.safe_dump(pipeline_to_dict(stage, name, description), sort_keys=False, allow_unicode=True)
    return atomic_write_text(path, text)
