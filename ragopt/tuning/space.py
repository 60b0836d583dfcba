"""Search spaces: parameters at dotted paths of a pipeline config.

A parameter names a place in the pipeline config (``stages.0.k1``, ``stages.1`` for a whole stage) and the
values it may take: ``categorical`` (a list, or a mapping of labels to values: values may be whole component
configs, and ``null`` removes a stage from its list), ``int`` and ``float`` (``low``/``high``, ``log``,
``step``; the grid-based tuners walk every point of a stepped range up to 10,000, and ``levels`` points of its
lattice beyond that; a step finer than a trillionth of its range is refused). ``when: {other_param:
value-or-list}`` makes a parameter conditional: it is active only when the named parameter (declared earlier) is
active and has one of those values. ``group`` gathers parameters for the hierarchical bandit; ``model: true`` marks
model choices (greedy "models first").

The space is validated against the pipeline template before any trial: every parameter is applied at its
extreme values and the resulting config is built, so a wrong path, an unknown key or an out-of-range value
fails at once with the parameter named.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragopt._imports import require
from ragopt.errors import ConfigError

__all__ = ["Param", "SearchSpace", "apply_params", "set_path", "get_path"]

_MISSING = object()
_RAISE = object()
_KINDS = ("categorical", "int", "float")
# a stepped range with more points than this gets a grid of ``levels`` points on its step lattice instead of every
# point (low 0, high 1e6, step 1e-9 would be 1e15 values; the fuzz test found it hanging the grid-based tuners);
# ``levels`` is at most this
MAX_STEPPED_GRID = 10_000
# a step that divides its range into more pieces than this is refused (optuna's Decimal arithmetic fails on 1e28)
MAX_STEPS = 1e12


@dataclass
class Param:
    """One tunable parameter. ``labels`` are what samplers see for categorical values (strings/numbers)."""

    name: str
    path: str
    kind: str
    choices: list[Any] | None = None  # values (may be dicts / None) for categorical
    labels: list[Any] | None = None  # sampler-facing labels of the choices
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    values: list[Any] | None = None  # explicit grid for numeric params
    levels: int = 5
    when: dict[str, list[Any]] = field(default_factory=dict)
    group: str | None = None
    model: bool = False

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str) -> Param:
        if not isinstance(d, Mapping):
            raise ConfigError(where, f"expected a mapping describing a parameter, got {d!r}")
        known = {
            "name",
            "path",
            "type",
            "choices",
            "low",
            "high",
            "log",
            "step",
            "values",
            "levels",
            "when",
            "group",
            "model",
        }
        for k in d:
            if k not in known:
                raise ConfigError(
                    f"{where}.{k}", f"unknown key for a search-space parameter (known: {', '.join(sorted(known))})"
                )
        path = d.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path", "each parameter needs a 'path' (dotted path into the pipeline)")
        name = str(d.get("name") or path)
        kind = d.get("type") or ("categorical" if "choices" in d else None)
        if kind not in _KINDS:
            raise ConfigError(f"{where}.type", f"must be one of {list(_KINDS)}, got {kind!r}")
        for key in ("log", "model"):  # bool("false") is True: a quoted flag would silently mean yes
            if not isinstance(d.get(key, False), bool):
                raise ConfigError(f"{where}.{key}", f"must be true or false, got {d[key]!r}")
        group = d.get("group")
        if group is not None and (not isinstance(group, str) or not group):
            raise ConfigError(f"{where}.group", f"must be a group name (a non-empty string), got {group!r}")
        p = cls(
            name=name,
            path=path,
            kind=kind,
            log=d.get("log", False),
            step=d.get("step"),
            levels=_levels(d.get("levels", 5), f"{where}.levels"),
            group=group,
            model=d.get("model", False),
        )
        w = f"{where}({name})"
        if kind == "categorical":
            ch = d.get("choices")
            if isinstance(ch, Mapping):
                if not ch:
                    raise ConfigError(f"{w}.choices", "empty choices")
                p.labels = [str(k) for k in ch]
                p.choices = [ch[k] for k in ch]
            elif isinstance(ch, list):
                if not ch:
                    raise ConfigError(f"{w}.choices", "empty choices")
                if any(isinstance(c, (dict, list)) for c in ch):
                    raise ConfigError(
                        f"{w}.choices", "structured choices need labels: write them as a mapping {label: value}"
                    )
                if len(set(map(repr, ch))) != len(ch):
                    raise ConfigError(f"{w}.choices", f"duplicate choices in {ch}")
                p.labels = [c if c is not None else "null" for c in ch]
                p.choices = list(ch)
            else:
                raise ConfigError(f"{w}.choices", f"expected a list or a mapping, got {ch!r}")
        else:
            if "values" in d:
                vals = d["values"]
                if not isinstance(vals, list) or not vals:
                    raise ConfigError(f"{w}.values", "expected a non-empty list")
                if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vals):
                    raise ConfigError(f"{w}.values", f"expected finite numbers, got {vals!r}")
                p.values = vals
            if p.step is not None and (
                isinstance(p.step, bool)
                or not isinstance(p.step, (int, float))
                or not math.isfinite(p.step)
                or not p.step > 0
            ):
                raise ConfigError(f"{w}.step", f"must be a finite number > 0, got {p.step!r}")
            if kind == "int" and p.step is not None and p.step != int(p.step):
                raise ConfigError(f"{w}.step", f"an int parameter needs a whole step, got {p.step!r}")
            for key in ("low", "high"):
                v = d.get(key, p.values and (min(p.values) if key == "low" else max(p.values)))
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise ConfigError(f"{w}.{key}", f"a finite number is required, got {v!r}")
                setattr(p, key, int(v) if kind == "int" else float(v))
            if p.low > p.high:
                raise ConfigError(w, f"low ({p.low}) > high ({p.high})")
            if p.log and p.low <= 0:
                raise ConfigError(f"{w}.low", f"log scale needs low > 0, got {p.low}")
            if p.step is not None and p.log:
                raise ConfigError(f"{w}.step", "step and log cannot be combined")
            if p.step is not None and p.high > p.low and p.step > (p.high - p.low) * (1 + 1e-9):
                raise ConfigError(
                    f"{w}.step", f"{p.step!r} is wider than the range [{p.low}, {p.high}]: only low could be drawn"
                )
            if p.step is not None and (p.high - p.low) / p.step > MAX_STEPS:
                raise ConfigError(
                    f"{w}.step",
                    f"{p.step!r} divides [{p.low}, {p.high}] into more than {MAX_STEPS:.0e} steps: "
                    "use a larger step, or none (a continuous range)",
                )
            if p.levels < 2:
                raise ConfigError(f"{w}.levels", "levels must be >= 2")
        when = d.get("when") or {}
        if not isinstance(when, Mapping):
            raise ConfigError(f"{w}.when", f"expected a mapping {{param: value or [values]}}, got {when!r}")
        p.when = {str(k): (list(v) if isinstance(v, list) else [v]) for k, v in when.items()}
        return p

    # -- values ------------------------------------------------------------------------------------
    def value_of(self, label: Any) -> Any:
        """The config value for a sampler-facing value (a label for categoricals)."""
        if self.kind == "float" and isinstance(label, float):
            return round(label, 10)  # 1.7999999999999998 (a stepped float) -> 1.8 in exported configs
        if self.kind != "categorical":
            return label
        return copy.deepcopy(self.choices[self.labels.index(label)])

    def grid(self) -> list[Any]:
        """Discrete sampler-facing values: choices, explicit values, every point of a stepped range (up to
        ``MAX_STEPPED_GRID``; beyond it ``levels`` points of the step lattice, evenly spread), or ``levels`` points
        (log if log)."""
        if self.kind == "categorical":
            return list(self.labels)
        if self.values is not None:
            return list(self.values)
        lo, hi = self.low, self.high
        if self.step:
            step = int(self.step) if self.kind == "int" else self.step
            n = int(math.floor((hi - lo) / step + 1e-9)) + 1  # lattice points lo, lo + step, ... <= hi
            if n <= MAX_STEPPED_GRID:
                picks: Iterable[int] = range(n)
            else:
                picks = sorted({round(i * (n - 1) / (self.levels - 1)) for i in range(self.levels)})
            if self.kind == "int":
                return [int(lo) + i * step for i in picks]
            return [min(round(lo + i * step, 12), hi) for i in picks]  # rounding never steps past high
        if self.kind == "int" and hi - lo + 1 <= self.levels:
            return list(range(int(lo), int(hi) + 1))
        if self.log:
            pts = [
                math.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * i / (self.levels - 1))
                for i in range(self.levels)
            ]
        else:
            pts = [lo + (hi - lo) * i / (self.levels - 1) for i in range(self.levels)]
        if self.kind == "int":
            return sorted({int(round(x)) for x in pts})
        return [round(x, 10) for x in pts]

    def distribution(self):
        """The matching Optuna distribution."""
        dists = require("optuna.distributions", "tune", "search spaces")
        CategoricalDistribution, FloatDistribution, IntDistribution = (
            dists.CategoricalDistribution,
            dists.FloatDistribution,
            dists.IntDistribution,
        )

        if self.kind == "categorical":
            return CategoricalDistribution(self.labels)
        if self.values is not None:
            return CategoricalDistribution(self.values)
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)

    def extremes(self) -> list[Any]:
        return self.grid() if self.kind == "categorical" or self.values is not None else [self.low, self.high]


class SearchSpace:
    """An ordered list of :class:`Param` with conditions between them."""

    def __init__(self, params: Sequence[Param]):
        self.params = list(params)
        names = [p.name for p in self.params]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError("space", f"duplicate parameter names: {sorted(dup)}")
        seen: set[str] = set()
        for p in self.params:
            for ref in p.when:
                if ref not in seen:
                    raise ConfigError(
                        f"space({p.name}).when", f"refers to {ref!r}, which is not a parameter declared before it"
                    )
            seen.add(p.name)
        self.by_name = {p.name: p for p in self.params}
        for p in self.params:  # the bandit keys a group by its name, an ungrouped parameter by its own
            other = self.by_name.get(p.group) if p.group else None
            if other is not None and other.group != p.group:
                raise ConfigError(
                    f"space({p.name}).group",
                    f"{p.group!r} is also the name of a parameter outside that group: the hierarchical bandit "
                    "would move them as one; rename the group",
                )

    @classmethod
    def from_list(cls, items: Iterable[Mapping[str, Any]], where: str = "space") -> SearchSpace:
        if isinstance(items, Mapping):  # {name: {...}} form
            items = [{"name": k, **v} if isinstance(v, Mapping) else v for k, v in items.items()]
        if not isinstance(items, (list, tuple)):
            raise ConfigError(where, f"expected a list of parameters, got {type(items).__name__}")
        params = [Param.from_dict(d, f"{where}[{i}]") for i, d in enumerate(items)]
        if not params:
            raise ConfigError(where, "the search space is empty")
        return cls(params)

    def __len__(self) -> int:
        return len(self.params)

    def __iter__(self):
        return iter(self.params)

    def active(self, values: Mapping[str, Any]) -> list[Param]:
        """Parameters active under ``values`` (sampler-facing), in declaration order."""
        out, on = [], {}
        for p in self.params:
            if all(ref in on and on[ref] in allowed for ref, allowed in p.when.items()):
                out.append(p)
                on[p.name] = values.get(p.name, _MISSING)
        return out

    def complete(self, values: Mapping[str, Any], fill) -> dict[str, Any]:
        """``values`` restricted to the active parameters, with every active parameter that has no value
        filled by ``fill(param)``, until no new parameter becomes active."""
        out = dict(values)
        while True:
            missing = [p for p in self.active(out) if p.name not in out]
            if not missing:
                break
            for p in missing:
                out[p.name] = fill(p)
        return {p.name: out[p.name] for p in self.active(out)}

    def is_active(self, p: Param, values: Mapping[str, Any]) -> bool:
        return any(q.name == p.name for q in self.active(values))

    def grid_size(self) -> int:
        """Number of distinct active configurations in the discretised space."""
        return len(list(self.iter_grid()))

    def iter_grid(self):
        """Every distinct combination of grid values of the active parameters (conditions respected)."""

        def rec(i: int, cur: dict[str, Any]):
            if i == len(self.params):
                yield dict(cur)
                return
            p = self.params[i]
            if all(ref in cur and cur[ref] in allowed for ref, allowed in p.when.items()):
                for v in p.grid():
                    cur[p.name] = v
                    yield from rec(i + 1, cur)
                del cur[p.name]
            else:
                yield from rec(i + 1, cur)

        yield from rec(0, {})

    def defaults_from(self, template: Mapping[str, Any]) -> dict[str, Any]:
        """Sampler-facing values matching the template config where possible (else the first grid value)."""
        out: dict[str, Any] = {}
        for p in self.params:
            if not all(ref in out and out[ref] in allowed for ref, allowed in p.when.items()):
                continue
            cur = get_path(template, p.path, default=_MISSING)
            if p.kind == "categorical":
                match = [lab for lab, val in zip(p.labels, p.choices) if _subset(val, cur)]
                out[p.name] = match[0] if match else p.labels[0]
            elif cur is not _MISSING and isinstance(cur, (int, float)) and p.low <= cur <= p.high:
                out[p.name] = cur
            else:
                g = p.grid()
                out[p.name] = g[len(g) // 2]
        return out

    def validate_against(self, template: Mapping[str, Any], build) -> None:
        """Apply every parameter at its extreme values to ``template`` and ``build`` the config; a failure
        names the parameter. ``build(config)`` raises ConfigError for an invalid config."""
        base = self.defaults_from(template)
        for p in self.params:
            for v in p.extremes():
                values = dict(base)
                # satisfy the parameter's conditions
                for ref, allowed in p.when.items():
                    values[ref] = allowed[0]
                values[p.name] = v
                try:
                    cfg = apply_params(template, self, values)
                    build(cfg)
                except ConfigError as e:
                    raise ConfigError(f"space({p.name})", f"path {p.path!r} with value {v!r}: {e}") from None


def _subset(part: Any, full: Any) -> bool:
    """``part`` matches ``full`` where it says anything (a choice written with defaults left out)."""
    if isinstance(part, Mapping):
        return isinstance(full, Mapping) and all(k in full and _subset(v, full[k]) for k, v in part.items())
    if isinstance(part, list):
        return isinstance(full, list) and len(part) == len(full) and all(map(_subset, part, full))
    return part == full


def _split(path: str) -> list[str]:
    return [s for s in path.replace("[", ".").replace("]", "").split(".") if s]


def get_path(cfg: Any, path: str, default: Any = _RAISE) -> Any:
    cur = cfg
    for part in _split(path):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            if default is _RAISE:
                raise ConfigError(path, f"the pipeline has no {part!r} here")
            return default
    return cur


def set_path(cfg: Any, path: str, value: Any) -> None:
    """Set ``value`` at a dotted path of a plain config (lists indexed by number). The parent must exist;
    a missing last key of a mapping is added (the component's validation rejects unknown keys)."""
    parts = _split(path)
    if not parts:
        raise ConfigError(path, "empty path")
    cur = cfg
    for i, part in enumerate(parts[:-1]):
        if isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        elif isinstance(cur, Mapping) and part in cur:
            cur = cur[part]
        else:
            where = ".".join(parts[:i]) or "the pipeline"
            raise ConfigError(path, f"{where} has no {part!r} (the pipeline does not have this path)")
    last = parts[-1]
    if isinstance(cur, list):
        if not (last.isdigit() and int(last) < len(cur)):
            raise ConfigError(path, f"index {last} is out of range for a list of {len(cur)}")
        cur[int(last)] = value
    elif isinstance(cur, dict):
        cur[last] = value
    else:
        raise ConfigError(path, f"cannot set {last!r} inside a {type(cur).__name__}")


_REMOVE = object()


def apply_params(template: Mapping[str, Any], space: SearchSpace, values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``template`` with the active parameters' values set at their paths. A categorical value of
    ``null`` at a list element removes that element (e.g. "no reranker")."""
    cfg = copy.deepcopy(dict(template))
    removals: list[str] = []
    for p in space.active(values):
        if p.name not in values:
            continue
        v = p.value_of(values[p.name])
        parts = _split(p.path)
        if v is None and parts[-1].isdigit():
            removals.append(p.path)
            continue
        set_path(cfg, p.path, v)
    # a set: two parameters may remove the same element (conditional ones at one path); it goes once
    for path in sorted(set(removals), key=lambda s: [int(x) if x.isdigit() else x for x in _split(s)], reverse=True):
        parts = _split(path)
        parent = get_path(cfg, ".".join(parts[:-1])) if len(parts) > 1 else cfg
        del parent[int(parts[-1])]
    return cfg


def _levels(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(where, f"must be an integer >= 1, got {value!r}")
    if value > MAX_STEPPED_GRID:  # 13 million levels took 8 s and 1.5 GB per grid (found by make fuzz)
        raise ConfigError(where, f"must be at most {MAX_STEPPED_GRID:,} (grid points, each a trial), got {value:,}")
    return value
