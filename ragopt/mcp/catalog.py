"""The tool catalogue: tools (name, description, input JSON schema) and the text each is indexed by.

A :class:`Catalog` holds :class:`ToolSpec` records loaded from a JSONL file (:meth:`Catalog.from_jsonl`) or
listed by upstream MCP servers (:mod:`ragopt.mcp.upstream`), and turns them into a
:class:`~ragopt.types.Corpus` (ids = tool ids, title = name, text = description and parameters, as set by a
:class:`TextTemplate`), so any ragopt pipeline retrieves tools and its indexes are artifacts keyed by the
corpus fingerprint like any other. No MCP SDK is needed here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from ragopt._imports import optional
from ragopt.data.jsonl import read_jsonl, record_id
from ragopt.errors import ConfigError, DataError
from ragopt.types import Corpus

__all__ = ["ToolSpec", "TextTemplate", "Catalog", "schema_problem"]

_PARAM_MODES = ("none", "names", "descriptions")
_KNOWN_KEYS = {"_id", "id", "name", "description", "input_schema", "inputSchema", "parameters", "server"}


@dataclass(frozen=True)
class ToolSpec:
    """One tool. ``id`` is what search returns and ``call_tool`` takes (``prefix + name`` for upstream
    tools); ``name`` is the tool's name on its own server; ``server`` is the configured upstream server
    that owns it (None for tools loaded from a file)."""

    id: str
    name: str
    description: str = ""
    input_schema: dict[str, Any] | None = None
    server: str | None = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    schema_error: str | None = None  # why input_schema is not a valid JSON schema (the gateway refuses calls)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
            "server": self.server,
        }


def _split_identifier(name: str) -> str:
    """``getWeather_forecast-v2`` -> ``get Weather forecast v2`` (so word tokenisers see the parts)."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])|[_\-./:]+", " ", name)
    return " ".join(spaced.split())


@dataclass(frozen=True)
class TextTemplate:
    """What text a tool is indexed by. The default reproduces the shared tool sets' ``corpus.jsonl``:
    title = name, text = ``description Parameters: p1: desc1; p2: desc2``."""

    name: bool = True  # the tool name as the title
    split_name: bool = False  # also index the words of identifier-style names (get_weather)
    description: bool = True
    params: Literal["none", "names", "descriptions"] = "descriptions"  # top-level input schema properties

    def __post_init__(self) -> None:
        for f in ("name", "split_name", "description"):
            if not isinstance(getattr(self, f), bool):
                raise ConfigError(f"text.{f}", f"expected true or false, got {getattr(self, f)!r}")
        if self.params not in _PARAM_MODES:
            raise ConfigError("text.params", f"must be one of {list(_PARAM_MODES)}, got {self.params!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "text") -> TextTemplate:
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise ConfigError(where, f"expected a mapping, got {d!r}")
        names = [f.name for f in fields(cls)]
        for k in d:
            if k not in names:
                raise ConfigError(f"{where}.{k}", f"unknown key (known: {', '.join(names)})")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def title(self, tool: ToolSpec) -> str:
        if not self.name:
            return ""
        split = _split_identifier(tool.name) if self.split_name else ""
        return f"{tool.name} {split}" if split and split != tool.name else tool.name

    def text(self, tool: ToolSpec) -> str:
        parts = [tool.description.strip()] if self.description and tool.description.strip() else []
        props = (tool.input_schema or {}).get("properties") if isinstance(tool.input_schema, dict) else None
        if self.params != "none" and isinstance(props, dict) and props:
            items = []
            for pname, pschema in props.items():
                desc = pschema.get("description", "") if isinstance(pschema, dict) else ""
                pname = str(pname)
                if self.split_name and _split_identifier(pname) != pname:
                    pname = f"{pname} ({_split_identifier(pname)})"
                items.append(f"{pname}: {desc}".rstrip() if self.params == "descriptions" else pname)
            parts.append("Parameters: " + "; ".join(items))
        return " ".join(parts)


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a usable input schema (None if it is None or a valid JSON schema object).
    Real catalogues carry a few invalid ones (toollens: ``"type": "enum"``): such tools stay searchable."""
    if schema is None:
        return None
    if not isinstance(schema, dict):
        return f"input_schema must be a JSON object or null, got {type(schema).__name__}"
    validators = optional("jsonschema.validators")
    if validators is None:  # jsonschema comes with the mcp extra; without it schemas are taken as given
        return None
    validator_for = validators.validator_for
    try:
        validator_for(schema).check_schema(schema)
    except Exception as e:  # jsonschema.SchemaError
        return f"invalid input_schema: {getattr(e, 'message', e)}"
    return None


class Catalog:
    """An immutable set of tools with unique ids, and the corpus they are indexed as."""

    def __init__(self, tools: Sequence[ToolSpec], template: TextTemplate | None = None, name: str = "tools"):
        self.template = template or TextTemplate()
        self.name = name
        self.tools: list[ToolSpec] = list(tools)
        self._by_id: dict[str, ToolSpec] = {}
        self._corpus: Corpus | None = None
        for t in self.tools:
            if not t.id:
                raise DataError(f"catalogue {name!r}: a tool has an empty id (name {t.name!r})")
            if t.id in self._by_id:
                other = self._by_id[t.id]
                raise DataError(
                    f"catalogue {name!r}: duplicate tool id {t.id!r} (servers "
                    f"{other.server or '-'} and {t.server or '-'}); give one server a prefix"
                )
            self._by_id[t.id] = t

    def __len__(self) -> int:
        return len(self.tools)

    def __iter__(self) -> Iterator[ToolSpec]:
        return iter(self.tools)

    def __contains__(self, tool_id: object) -> bool:
        return tool_id in self._by_id

    def __repr__(self) -> str:
        return f"Catalog(name={self.name!r}, n={len(self)}, fingerprint={self.fingerprint[:12]})"

    def get(self, tool_id: str) -> ToolSpec | None:
        return self._by_id.get(tool_id)

    @property
    def ids(self) -> list[str]:
        return [t.id for t in self.tools]

    @property
    def corpus(self) -> Corpus:
        """The tools as documents (row i = tool i), named ``tools:<name>``."""
        if self._corpus is None:
            self._corpus = Corpus(
                [t.id for t in self.tools],
                [self.template.text(t) for t in self.tools],
                [self.template.title(t) for t in self.tools],
                name=f"tools:{self.name}",
            )
        return self._corpus

    @property
    def fingerprint(self) -> str:
        """Content hash of the indexed texts *and* of what is served (schemas, owners): a changed schema
        changes it even where the indexed text does not."""
        import hashlib

        h = hashlib.sha256(self.corpus.fingerprint.encode())
        for t in self.tools:
            h.update(json.dumps([t.id, t.name, t.server, t.input_schema], sort_keys=True, default=str).encode())
        return h.hexdigest()

    @classmethod
    def from_jsonl(
        cls, path: str | os.PathLike, template: TextTemplate | None = None, name: str | None = None
    ) -> Catalog:
        """Tools from JSON lines ``{"_id"?, "name", "description"?, "input_schema"?, ...}``; ``_id`` defaults
        to the name; ``inputSchema`` / ``parameters`` are accepted for ``input_schema``; other keys go to
        ``meta``. A dataset folder (with ``tools.jsonl``) is accepted too."""
        path = Path(path)
        if path.is_dir():
            cand = [path / "tools.jsonl", path / "tools.jsonl.gz"]
            found = next((p for p in cand if p.is_file()), None)
            if found is None:
                raise DataError(f"{path}: a folder without tools.jsonl")
            path = found
        if not path.is_file():
            raise DataError(f"{path}: tools file not found")
        tools, lines = [], {}
        for line_no, obj in read_jsonl(path):
            where = f"{path}:{line_no}"
            tname = obj.get("name")
            if not isinstance(tname, str) or not tname.strip():
                raise DataError(f'{where}: tool record needs a non-empty string "name"')
            tid = record_id(obj, "_id" if "_id" in obj else "id", where, "tool", default=tname)
            if tid in lines:
                raise DataError(f"{where}: duplicate tool id {tid!r} (first on line {lines[tid]})")
            lines[tid] = line_no
            desc = obj.get("description") or ""
            if not isinstance(desc, str):
                raise DataError(f'{where}: "description" must be a string')
            schema = next((obj[k] for k in ("input_schema", "inputSchema", "parameters") if k in obj), None)
            if schema is not None and not isinstance(schema, dict):
                raise DataError(f"{where}: input_schema must be a JSON object or null, got {type(schema).__name__}")
            tools.append(
                ToolSpec(
                    tid,
                    tname,
                    desc,
                    schema,
                    None,
                    {k: v for k, v in obj.items() if k not in _KNOWN_KEYS},
                    schema_problem(schema),
                )
            )
        if not tools:
            raise DataError(f"{path}: no tools")
        stem = path.name.split(".")[0]
        return cls(tools, template, name or (path.parent.name if stem == "tools" else stem))
