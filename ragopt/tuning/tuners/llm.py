"""``llm``: an LLM proposes the next configuration, as in "Using Large Language Models for Hyperparameter
Optimization" (Zhang et al., 2023).

At every ask the LLM is shown the search space (names, types, choices or ranges, conditions), the trials so far
with their scores (the most recent ``max_history``, and the best), and asked for one new configuration as a JSON
object. The reply is parsed (the first JSON object in it) and checked against the space:

* a valid configuration is used verbatim (``valid``);
* one that can be mended is *repaired* (``repaired``): numbers clamped to their range and snapped to their step
  (ints rounded), a categorical value matched to its choice by spelling (``"true"`` -> ``True``) or, for
  numeric choices, snapped to the nearest one; keys the space does not know dropped, active parameters left out
  filled from the best configuration so far;
* anything else is *rejected* (``rejected``, with the reason in ``rejections``: ``unparseable``, ``invalid``,
  ``duplicate`` (already tried)). The tuner then answers the model in the same chat, saying what was wrong (no
  JSON object; which value is not allowed; which trial it repeats, with its score) and asks again, up to
  ``retries`` times (``retried`` counts these follow-ups); when every answer is rejected, a seeded random
  configuration is asked instead (``fallbacks``), so a study always progresses. A failed LLM call (after the backend's own retries) is no proposal: it counts in
  ``rejections`` as ``llm_error`` and falls back the same way.

``proposals`` counts the LLM's answers (``valid + repaired + rejected``); ``last`` holds the latest one's
status, reply and notes, ``llm_stats`` the calls made and served by the cache. Every call goes through the
persistent LLM call cache (:class:`ragopt.llm.CachedLLM`, in ``store``'s root; decoding is greedy), so a study
repeated with the same seed and the same results costs no LLM call, and the tuner is deterministic given its
seed and tells (the study bridge rebuilds it at every trial, which asks the model once per trial).

Options (``tuner: {name: llm, llm: {...}, seed: 0}``): ``llm`` (a backend config mapping, a model name on the
transformers backend, or an :class:`~ragopt.llm.LLMBackend`; default the packaged SmolLM2-135M-Instruct),
``max_history``, ``max_new_tokens``, ``retries`` (follow-ups after a rejected answer, default 1), ``task`` (one line on what is tuned, added to the prompt), ``cache``,
``store`` (artifact store or its root; a study passes its own).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from ragopt.errors import ConfigError, LLMError
from ragopt.tuning.space import Param, SearchSpace
from ragopt.tuning.tuners.base import Tuner, Value, config_key

__all__ = ["LLMTuner", "build_prompt", "parse_proposal", "repair_proposal", "PROMPT_VERSION"]

#: bump when the prompt changes (it is part of every cached call's key through the prompt text anyway)
PROMPT_VERSION = 1
_STATUSES = ("valid", "repaired", "rejected")
_BACKENDS: dict[str, Any] = {}  # loaded backends by config, reused when the study bridge rebuilds the tuner


# ---------------------------------------------------------------------------------------------------
# prompt


def _label(v: Any) -> str:
    return json.dumps(v)


def describe_param(p: Param) -> str:
    """One line of the space's description: name, type, choices or range, condition."""
    if p.kind == "categorical":
        what = f"one of [{', '.join(_label(v) for v in p.labels)}]"
    elif p.values is not None:
        what = f"one of [{', '.join(_label(v) for v in p.values)}]"
    else:
        kind = "integer" if p.kind == "int" else "number"
        lo, hi = (int(p.low), int(p.high)) if p.kind == "int" else (p.low, p.high)
        what = f"{kind} from {lo} to {hi}"
        if p.step:
            what += f" in steps of {int(p.step) if p.kind == 'int' else p.step}"
        if p.log:
            what += " (log scale)"
    cond = ""
    if p.when:
        parts = [f"{ref} is {' or '.join(_label(v) for v in allowed)}" for ref, allowed in p.when.items()]
        cond = f" (only when {' and '.join(parts)})"
    return f"- {p.name}: {what}{cond}"


def _fmt_value(v: Value) -> str:
    if v is None:
        return "failed"
    vals = list(v) if isinstance(v, (list, tuple)) else [v]
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in vals):
        return "failed"
    return ", ".join(f"{float(x):.4g}" for x in vals)


def build_prompt(
    space: SearchSpace,
    history: list[tuple[dict[str, Any], Value]],
    directions: list[str],
    best: tuple[dict[str, Any], Value] | None = None,
    max_history: int = 30,
    task: str = "",
) -> list[dict[str, str]]:
    """The chat the LLM is asked: the space, the trials so far with their scores, and the request."""
    goal = " and ".join("higher is better" if d == "maximize" else "lower is better" for d in directions)
    lines = [
        "You are tuning the hyperparameters of a retrieval / RAG pipeline." + (f" {task}" if task else ""),
        f"Each trial gets a score ({goal}).",
        "",
        "Search space:",
        *[describe_param(p) for p in space.params],
        "",
    ]
    shown = list(enumerate(history, 1))[-max_history:] if max_history > 0 else []
    if shown:
        # the count comes after the list, so that the next prompt repeats this one up to the last trial: a backend
        # that keeps the KV cache of a shared head (llama.cpp) reads only the new trial and what follows it
        first = shown[0][0]
        lines.append("Trials so far:")
        lines += [f"{i}. {json.dumps(p, sort_keys=True, default=str)} -> score {_fmt_value(v)}" for i, (p, v) in shown]
        lines.append(f"({len(history)} trials" + (f"; the last {len(shown)} shown" if first > 1 else "") + ")")
        if best is not None:
            lines.append(
                f"Best so far: {json.dumps(best[0], sort_keys=True, default=str)} -> score {_fmt_value(best[1])}"
            )
    else:
        lines.append("No trials yet.")
    keys = ", ".join(p.name for p in space.params if not p.when)
    cond = [p.name for p in space.params if p.when]
    lines += [
        "",
        "Propose the next configuration to try: a new one, not in the list, likely to score better.",
        f"Reply with one JSON object only, no explanation, with the keys {keys}"
        + (f" (and {', '.join(cond)} when their condition holds)" if cond else "")
        + ".",
    ]
    return [
        {"role": "system", "content": "You are an expert in hyperparameter optimization. You reply with JSON only."},
        {"role": "user", "content": "\n".join(lines)},
    ]


# ---------------------------------------------------------------------------------------------------
# parsing and repair

_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}


def parse_proposal(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (code fences, prose around it and single quotes tolerated; of an object cut
    short, its complete ``"key": value`` pairs), or None."""
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        chunk = text[m.start() :]
        for candidate in (chunk, _loosen(chunk)):
            try:
                obj, _ = decoder.raw_decode(candidate)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj:
                return obj
    start = text.find("{")  # an object cut short (the model ran out of tokens): its complete "key": value pairs
    if start >= 0:
        pairs = {}
        for m in _PAIR.finditer(_loosen(text[start:])):
            try:
                pairs.setdefault(m.group(1), json.loads(m.group(2)))
            except ValueError:
                continue
        if pairs:
            return pairs
    return None


_PAIR = re.compile(r'"([^"\\]+)"\s*:\s*("[^"\\]*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null)(?=\s*[,}\n])')


def _loosen(s: str) -> str:
    """Python-ish dicts as JSON: single quotes, True/False/None, trailing commas."""
    s = re.sub(r"'([^'\"]*)'", r'"\1"', s)
    s = re.sub(r"\b(True|False|None)\b", lambda m: _PY_LITERALS[m.group(1)], s)
    return re.sub(r",\s*([}\]])", r"\1", s)


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, str):
        try:
            x = float(v.strip())
        except ValueError:
            return None
        return x if math.isfinite(x) else None
    return None


def _fix_value(p: Param, v: Any) -> tuple[Any, bool] | None:
    """``(value, repaired)`` for a proposed value of ``p``, or None when it cannot be mended."""
    if p.kind == "categorical" or p.values is not None:
        options = list(p.labels) if p.kind == "categorical" else list(p.values)
        for o in options:
            if type(o) is type(v) and o == v:
                return o, False
        x = _number(v)
        for o in options:  # 1 for the choice 1.0
            if x is not None and not isinstance(o, (bool, str)) and _number(o) == x:
                return o, False
        if v is None and "null" in options:
            return "null", False
        spelled = [o for o in options if str(o).lower() == str(v).strip().lower() or _label(o) == str(v).strip()]
        if spelled:
            return spelled[0], True
        numeric = [o for o in options if _number(o) is not None and not isinstance(o, str)]
        if x is not None and numeric and len(numeric) == len(options):
            return min(numeric, key=lambda o: (abs(float(o) - x), float(o))), True
        return None
    x = _number(v)
    if x is None:
        return None
    y = min(max(x, p.low), p.high)
    if p.step:
        y = p.low + round((y - p.low) / p.step) * p.step
        if y > p.high + 1e-9:
            y -= p.step
        y = round(y, 10)  # 0.30000000000000004 -> 0.3
    if p.kind == "int":
        y = int(round(y))
    moved = abs(y - x) > 1e-9 * max(1.0, abs(x))  # a stepped value off by float rounding is not a repair
    return y, moved or not isinstance(v, (int, float)) or (p.kind == "int" and not float(v).is_integer())


def repair_proposal(
    space: SearchSpace, proposal: Mapping[str, Any], fill: Any
) -> tuple[dict[str, Any] | None, str, list[str]]:
    """Check ``proposal`` against ``space``: ``(params, status, notes)``, status ``valid``, ``repaired`` or
    ``invalid`` (params None). ``fill(param)`` gives a value for an active parameter the proposal left out."""
    notes: list[str] = []
    known = {p.name for p in space.params}
    unknown = sorted(k for k in proposal if k not in known)
    if not set(proposal) & known:
        return None, "invalid", [f"no parameter of the space in {sorted(proposal)}"]
    if unknown:
        notes.append(f"dropped unknown keys {unknown}")
    out: dict[str, Any] = {}
    for p in space.params:  # in declaration order, so conditions see the values they depend on
        if not all(ref in out and out[ref] in allowed for ref, allowed in p.when.items()):
            continue
        if p.name not in proposal:
            out[p.name] = fill(p)
            notes.append(f"{p.name} missing: filled with {out[p.name]!r}")
            continue
        fixed = _fix_value(p, proposal[p.name])
        if fixed is None:
            return None, "invalid", [f"{p.name}={proposal[p.name]!r} is not a value of {describe_param(p)[2:]}"]
        value, repaired = fixed
        if repaired:
            notes.append(f"{p.name}: {proposal[p.name]!r} -> {value!r}")
        out[p.name] = value
    return out, ("repaired" if notes else "valid"), notes


# ---------------------------------------------------------------------------------------------------
# the tuner


class LLMTuner(Tuner):
    """An LLM proposes each configuration (see the module docstring); invalid proposals are repaired or rejected."""

    name = "llm"

    def _configure(
        self,
        llm: Any = None,
        max_history: int = 30,
        max_new_tokens: int = 160,
        retries: int = 1,
        task: str = "",
        cache: bool = True,
        store: Any = None,
    ) -> None:
        if not isinstance(max_history, int) or max_history < 0:
            raise ConfigError("tuner.max_history", f"must be an integer >= 0, got {max_history!r}")
        if not isinstance(max_new_tokens, int) or max_new_tokens < 8:
            raise ConfigError("tuner.max_new_tokens", f"must be an integer >= 8, got {max_new_tokens!r}")
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            raise ConfigError("tuner.retries", f"must be an integer >= 0, got {retries!r}")
        self.retries = retries
        self.backend = _backend(llm)
        self.max_history = max_history
        self.max_new_tokens = max_new_tokens
        self.task = str(task or "")
        self.cache = bool(cache)
        self.store = store
        self._client: Any = None
        self.counts = {"proposals": 0, "valid": 0, "repaired": 0, "rejected": 0, "retried": 0, "fallbacks": 0}
        self.rejections: dict[str, int] = {}
        self.last: dict[str, Any] = {}

    # -- LLM ---------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The backend behind the persistent call cache (:class:`ragopt.llm.CachedLLM`), made on first use."""
        if self._client is None:
            from ragopt.llm.cache import CachedLLM
            from ragopt.store import ArtifactStore

            store = self.store
            if store is not None and not hasattr(store, "root"):
                store = ArtifactStore(store)
            self._client = CachedLLM(self.backend, store=store, cache=self.cache)
        return self._client

    @property
    def llm_stats(self) -> dict[str, int]:
        """``llm_calls``, ``llm_cache_hits``, tokens: the calls this tuner made (or the cache answered)."""
        return dict(self._client.stats.counts) if self._client is not None else {}

    def prompt(self) -> list[dict[str, str]]:
        """The first message of an ask (follow-ups after a rejected answer extend it)."""
        return build_prompt(self.space, self.history, self.directions, self.best, self.max_history, self.task)

    def _ask_llm(self, chat: list[dict[str, str]]) -> str:
        from ragopt.llm.base import GenerationParams

        params = GenerationParams(max_new_tokens=self.max_new_tokens, temperature=0.0)
        return self.client.generate([chat], params)[0].text

    # -- proposing -------------------------------------------------------------------------------
    def _fill(self, p: Param) -> Any:
        best = self.best
        if best is not None and p.name in best[0]:
            return best[0][p.name]
        return self._default_for(p)

    def _propose(self) -> dict[str, Any]:
        chat = self.prompt()
        for attempt in range(self.retries + 1):
            if attempt:
                self.counts["retried"] += 1
            try:
                text = self._ask_llm(chat)
            except LLMError as e:
                return self._reject("llm_error", "", [str(e)[:300]])
            self.counts["proposals"] += 1
            params, status, reason, notes = self._check(text)
            if params is not None:
                self.counts[status] += 1
                self.last = {"status": status, "reply": text[:500], "notes": notes, "attempts": attempt + 1}
                return params
            self._count_rejection(reason)
            chat = [
                *chat,
                {"role": "assistant", "content": text},
                {"role": "user", "content": self._feedback(reason, notes)},
            ]
        return self._fall_back(reason, text, notes)

    def _check(self, text: str) -> tuple[dict[str, Any] | None, str, str, list[str]]:
        """``(params, status, reason, notes)`` of one reply: params None when it is rejected (``reason``)."""
        proposal = parse_proposal(text)
        if proposal is None:
            return None, "rejected", "unparseable", ["no JSON object in the reply"]
        params, status, notes = repair_proposal(self.space, proposal, self._fill)
        if params is None:
            return None, "rejected", "invalid", notes
        params = self.space.complete(params, self._fill)
        key = config_key(params)
        if key in self.asked:
            tried = [(i, v) for i, (p, v) in enumerate(self.history, 1) if config_key(p) == key]
            where = f" (trial {tried[0][0]}, score {_fmt_value(tried[0][1])})" if tried else ""
            return (
                None,
                "rejected",
                "duplicate",
                [f"already tried{where}: {json.dumps(params, sort_keys=True, default=str)}"],
            )
        return params, status, "", notes

    @staticmethod
    def _feedback(reason: str, notes: list[str]) -> str:
        """The follow-up message after a rejected answer: what was wrong, and the request again."""
        again = "Reply with one JSON object only, no explanation."
        if reason == "unparseable":
            return f"Your reply has no JSON object. {again}"
        if reason == "duplicate":
            return (
                f"That configuration was {notes[0]}. Propose a configuration that is not in the list of trials. "
                + again
            )
        return f"That configuration is not valid: {'; '.join(notes)[:400]}. Use only the values the search space allows. {again}"

    def _count_rejection(self, reason: str) -> None:
        self.counts["rejected"] += 1
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    def _reject(self, reason: str, text: str, notes: list[str]) -> dict[str, Any]:
        """A failed LLM call: no proposal, counted in ``rejections``; fall back."""
        self.rejections[reason] = self.rejections.get(reason, 0) + 1
        return self._fall_back(reason, text, notes)

    def _fall_back(self, reason: str, text: str, notes: list[str]) -> dict[str, Any]:
        self.counts["fallbacks"] += 1
        self.last = {"status": "rejected", "reason": reason, "reply": text[:500], "notes": notes}
        for _ in range(20):  # a seeded random configuration not tried yet, else an untried grid point
            cand = self.space.complete(self._random_config(), self._default_for)
            if config_key(cand) not in self.asked:
                return cand
        return self._fallback()

    @property
    def ask_info(self) -> dict[str, Any]:
        """What the last ask was (recorded on a study's trial): status, reason, notes, counters."""
        info = {k: v for k, v in self.last.items() if k in ("status", "reason", "notes", "attempts")}
        if self.last.get("reply"):
            info["reply"] = self.last["reply"][:200]
        stats = self.llm_stats
        llm = {k: int(stats.get(k, 0)) for k in ("llm_calls", "llm_cache_hits")}
        return {**info, "counts": dict(self.counts), "rejections": dict(self.rejections), "llm": llm}


def _backend(llm: Any) -> Any:
    """The LLM backend of the ``llm`` option (see the module docstring)."""
    from ragopt.config import canonical_json
    from ragopt.llm import LLMBackend, load_backend

    if isinstance(llm, LLMBackend):
        return llm
    if llm is None:
        from ragopt.llm.stage import default_llm

        backend = default_llm()
    elif isinstance(llm, str):
        backend = load_backend({"type": "transformers", "model": llm})
    elif isinstance(llm, Mapping):
        try:
            backend = load_backend(dict(llm))
        except ConfigError as e:
            raise ConfigError(f"tuner.llm.{e.path}" if e.path else "tuner.llm", e.message) from None
    else:
        raise ConfigError("tuner.llm", f"expected a backend config, a model name or an LLMBackend, got {llm!r}")
    key = canonical_json(backend.to_config())
    if key not in _BACKENDS:
        if len(_BACKENDS) >= 4:
            _BACKENDS.pop(next(iter(_BACKENDS)))
        _BACKENDS[key] = backend
    return _BACKENDS[key]
