"""Components as validated configs.

Every configurable object in ragopt (retrievers, rerankers, pipelines, fusion, tuners' targets) is a
:class:`Component`: a keyword-only dataclass whose fields are its parameters and nothing else. From the
fields we get, for free and uniformly:

* ``to_config()`` / ``from_config()``: a plain dict (YAML-ready) with a ``type`` key naming the registered
  component; ``from_config`` rejects unknown keys and wrong types with the dotted path of the key;
* ``get_params()`` / ``set_params()`` with dotted paths into nested components (``stages.0.k1``);
* ``clone()`` (a fresh, unfitted copy), ``__eq__`` and ``__repr__``.

Runtime state (what ``fit`` produced, loaded indexes and models, caches) lives outside the fields, in private
attributes that each class declares in :meth:`Component._init_runtime`, so equality, configs and config hashes
never see it. What a component's ``fit`` (or ``load``) produced is kept in one attribute, ``self._fit`` (a
small per-class dataclass, see :class:`ragopt.pipeline.Fitted`): :meth:`ragopt.pipeline.Stage.fitted_state`
snapshots it for a whole tree of components. Field metadata may carry ``doc``, ``choices``,
``ge``/``gt``/``le``/``lt``.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from collections.abc import Iterator
from typing import Any, ClassVar, Literal, Union, get_args, get_origin

from ragopt.errors import ConfigError
from ragopt.registry import resolve

__all__ = ["Component", "param", "canonical_json", "config_hash", "from_config", "walk"]


def param(
    default: Any = dataclasses.MISSING,
    *,
    doc: str = "",
    choices: tuple | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """Declare a component parameter with documentation and bounds checked by ``from_config``."""
    meta = {"doc": doc, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def canonical_json(obj: Any) -> str:
    """Deterministic JSON (sorted keys, no whitespace): the input of every content hash."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def config_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}.get(tp.__name__, tp.__name__)
    return str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check ``value`` against annotation ``tp``; return the (lightly coerced) value or raise ConfigError."""
    if tp is Any:
        return value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        errors = []
        for alt in get_args(tp):
            try:
                return _coerce(value, alt, path)
            except ConfigError as e:
                errors.append(str(e))
        names = " or ".join(_type_name(a) for a in get_args(tp))
        raise ConfigError(path, f"expected {names}, got {type(value).__name__} {_shown(value)}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            hint = difflib.get_close_matches(value, [str(a) for a in allowed], n=1) if isinstance(value, str) else []
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(path, f"must be one of {list(allowed)}, got {_shown(value)}{extra}")
        return value
    if origin in (list, tuple, typing.Sequence, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {type(value).__name__} {_shown(value)}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [_coerce(v, item_tp, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, typing.Mapping, dict):
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {type(value).__name__} {_shown(value)}")
        _, val_tp = get_args(tp) or (str, Any)
        return {str(k): _coerce(v, val_tp, f"{path}.{k}") for k, v in value.items()}
    if tp is type(None):
        if value is not None:
            raise ConfigError(path, f"expected null, got {_shown(value)}")
        return None
    if isinstance(tp, type) and issubclass(tp, Component):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            obj = from_config(value, path=path)
            if not isinstance(obj, tp):
                raise ConfigError(path, f"expected a {tp.__name__} component, got type {value.get('type')!r}")
            return obj
        raise ConfigError(path, f"expected a component mapping with a 'type' key, got {_shown(value)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(path, f"expected a boolean, got {type(value).__name__} {_shown(value)}")
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(2**63) <= value < 2**63:  # nothing downstream (numpy, faiss, torch) holds more; float() overflowed
                raise ConfigError(path, f"expected a 64-bit integer, got {_shown(value)}")
            return value
        raise ConfigError(path, f"expected an integer, got {type(value).__name__} {_shown(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                out = float(value)
            except OverflowError:
                out = math.inf
            if not math.isfinite(out):  # inf passed `ge` bounds, then the config could not be hashed (JSON)
                raise ConfigError(path, f"expected a finite number, got {_shown(value)}")
            return out
        raise ConfigError(path, f"expected a number, got {type(value).__name__} {_shown(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(path, f"expected a string, got {type(value).__name__} {_shown(value)}")
    return value


def _shown(value: Any) -> str:
    """``repr(value)`` for an error message, but a huge integer as its size (its repr is long, and beyond 4,300
    digits a ValueError)."""
    if isinstance(value, int) and value.bit_length() > 100:
        return f"<about {math.floor(value.bit_length() * math.log10(2)) + 1} digits>"
    return repr(value)


def _check_bounds(value: Any, meta: typing.Mapping, path: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        hint = difflib.get_close_matches(value, [str(c) for c in choices], n=1) if isinstance(value, str) else []
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(path, f"must be one of {list(choices)}, got {_shown(value)}{extra}")
    for key, op, word in (
        ("ge", float.__ge__, ">="),
        ("gt", float.__gt__, ">"),
        ("le", float.__le__, "<="),
        ("lt", float.__lt__, "<"),
    ):
        bound = meta.get(key)
        if bound is not None and isinstance(value, (int, float)) and not op(float(value), float(bound)):
            raise ConfigError(path, f"must be {word} {bound}, got {_shown(value)}")


class Component:
    """Base class of everything that has a config. Subclasses are keyword-only dataclasses.

    Subclasses are registered under a short name with :func:`ragopt.registry.register`, which sets
    ``type_name``. ``validate()`` may be overridden for cross-field checks (raise ConfigError)."""

    type_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Every subclass becomes a keyword-only dataclass unless it already is one.
        if "__dataclass_fields__" not in cls.__dict__:
            dataclasses.dataclass(kw_only=True, eq=True, repr=True)(cls)

    def __post_init__(self) -> None:
        self._init_runtime()
        self._validate_fields("")

    def _init_runtime(self) -> None:
        """Declare (and reset) the runtime attributes: called on construction and whenever a parameter changes,
        which unfits the component. ``self._fit`` holds what ``fit``/``load`` produced (None: nothing yet).
        Subclasses that keep more (loaded models, caches) override this, call ``super()._init_runtime()`` and
        set their own private attributes."""
        self._fit: Any = None

    # -- validation --------------------------------------------------------------------------
    def _validate_fields(self, path: str) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            p = f"{path}.{f.name}" if path else f.name
            value = _coerce(getattr(self, f.name), hints.get(f.name, Any), p)
            _check_bounds(value, f.metadata, p)
            object.__setattr__(self, f.name, value)
        self.validate(path)

    def validate(self, path: str = "") -> None:
        """Cross-field checks; raise :class:`ConfigError` naming ``path``."""

    # -- config round trip -------------------------------------------------------------------
    @classmethod
    def param_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def param_docs(cls) -> dict[str, str]:
        return {f.name: f.metadata.get("doc", "") for f in dataclasses.fields(cls)}

    def to_config(self) -> dict[str, Any]:
        cfg: dict[str, Any] = {"type": self.type_name}
        for f in dataclasses.fields(self):
            cfg[f.name] = _to_plain(getattr(self, f.name))
        return cfg

    @classmethod
    def from_config(cls, cfg: typing.Mapping[str, Any], path: str = "") -> Component:
        if not isinstance(cfg, typing.Mapping):
            raise ConfigError(path, f"expected a mapping, got {type(cfg).__name__} {cfg!r}")
        names = cls.param_names()
        kwargs = {}
        for key, value in cfg.items():
            if key == "type":
                continue
            p = f"{path}.{key}" if path else str(key)
            if key not in names:
                hint = difflib.get_close_matches(str(key), names, n=1)
                extra = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ConfigError(
                    p, f"unknown key for component {cls.type_name!r}{extra} (known keys: {', '.join(names)})"
                )
            kwargs[key] = value
        missing = [
            f.name
            for f in dataclasses.fields(cls)
            if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        if missing:
            raise ConfigError(path, f"missing required key(s) for {cls.type_name!r}: {', '.join(missing)}")
        obj = cls.__new__(cls)
        for f in dataclasses.fields(cls):
            if f.name in kwargs:
                val = kwargs[f.name]
            elif f.default is not dataclasses.MISSING:
                val = f.default
            else:
                val = f.default_factory()
            object.__setattr__(obj, f.name, val)
        obj._init_runtime()
        obj._validate_fields(path)
        return obj

    def clone(self, **overrides: Any) -> Component:
        """A fresh, unfitted copy (optionally with some parameters changed, dotted paths allowed)."""
        new = from_config(self.to_config())
        if overrides:
            new.set_params(**overrides)
        return new

    def config_hash(self) -> str:
        return config_hash(self.to_config())

    # -- nested parameters -------------------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Flat map of parameter paths to values; nested components are expanded with dotted paths."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value
            if deep and isinstance(value, Component):
                for k, v in value.get_params(deep=True).items():
                    out[f"{f.name}.{k}"] = v
            elif deep:
                for sub_key, sub_val in _children(value):
                    if isinstance(sub_val, Component):
                        out[f"{f.name}.{sub_key}"] = sub_val
                        for k, v in sub_val.get_params(deep=True).items():
                            out[f"{f.name}.{sub_key}.{k}"] = v
        return out

    def set_params(self, **params: Any) -> Component:
        """Set parameters by name or dotted path (``stages.0.k1=1.2``; ``__`` also separates). All or nothing: when
        one is refused (ConfigError) the component is left as it was."""
        if len(params) > 1:  # try them on a copy first, so that a refused second one does not leave the first set
            trial = from_config(self.to_config())
            for key, value in params.items():
                trial._set_path(key.replace("__", ".").split("."), value, key)
        for key, value in params.items():
            self._set_path(key.replace("__", ".").split("."), value, key)
        return self

    def _set_path(self, parts: list[str], value: Any, full: str) -> None:
        head, rest = parts[0], parts[1:]
        names = self.param_names()
        here = ".".join(full.replace("__", ".").split(".")[: -len(parts)])  # this component's own path
        if head not in names:
            hint = difflib.get_close_matches(head, names, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(full, f"{type(self).__name__} has no parameter {head!r}{extra}")
        if not rest:
            hints = typing.get_type_hints(type(self))
            f = next(f for f in dataclasses.fields(self) if f.name == head)
            coerced = _coerce(value, hints.get(head, Any), full)
            _check_bounds(coerced, f.metadata, full)
            old = getattr(self, head)
            object.__setattr__(self, head, coerced)
            try:
                self.validate(here)  # the component's path: validate names the field (was "template.template")
            except BaseException:
                object.__setattr__(self, head, old)  # a refused value leaves the component as it was
                raise
            self._init_runtime()
            return
        child = getattr(self, head)
        # was "TransformersLLM has no parameter 'type'": say how another component is chosen
        not_a_param = "a component's type is not a parameter"
        if isinstance(child, Component):
            if rest == ["type"]:
                where = f"{here}.{head}" if here else head
                raise ConfigError(full, f"{not_a_param}: replace the component ({where}={{type: ..., ...}})")
            child._set_path(rest, value, full)
        else:
            subs = dict(_children(child))
            sub = subs.get(rest[0])
            if not isinstance(sub, Component):
                raise ConfigError(full, f"{head!r} has no nested component {rest[0]!r}")
            if not rest[1:]:
                raise ConfigError(full, "cannot replace a whole nested component by path; set its parameters")
            if rest[1:] == ["type"]:
                raise ConfigError(full, f"{not_a_param}: edit the pipeline file to put another component here")
            sub._set_path(rest[1:], value, full)
        self._init_runtime()


def walk(component: Component, order: Literal["pre", "post"] = "pre") -> Iterator[Component]:
    """The component and every component nested in its fields (pipeline stages, fusion inputs, encoders,
    indexes, scorers), depth first in field order: each component before its children (``pre``) or after
    them (``post``, the order in which ``fit`` builds them)."""
    if order == "pre":
        yield component
    for f in dataclasses.fields(component):
        value = getattr(component, f.name)
        items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
        for v in items:
            if isinstance(v, Component):
                yield from walk(v, order)
    if order == "post":
        yield component


def _children(value: Any):
    if isinstance(value, Component):
        # a single nested component: its params are addressed directly under the field name
        return []
    if isinstance(value, list):
        return [(str(i), v) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return [(str(k), v) for k, v in value.items()]
    return []


def _to_plain(value: Any) -> Any:
    if isinstance(value, Component):
        return value.to_config()
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    return value


def from_config(cfg: Any, path: str = "") -> Component:
    """Build any registered component from its config mapping (the ``type`` key names it)."""
    if isinstance(cfg, Component):
        return cfg
    if not isinstance(cfg, typing.Mapping):
        raise ConfigError(path, f"expected a component mapping with a 'type' key, got {type(cfg).__name__} {cfg!r}")
    if "type" not in cfg:
        raise ConfigError(path, "missing 'type' key (the registered name of the component, e.g. 'bm25')")
    cls = resolve(cfg["type"], path=f"{path}.type" if path else "type")
    return cls.from_config(cfg, path=path)
