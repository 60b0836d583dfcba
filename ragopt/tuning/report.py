"""HTML report of a tuning study: one self-contained file (plotly.js embedded once, works offline).

Sections: a summary (directions, trials by state, best value and parameters, the study's ragopt config),
optimisation history, parameter importances, parallel coordinates, the Pareto front (multi-objective), cost
per stage (seconds per stage per trial, from the ``stage_seconds`` user attribute, and total counts per
cost counter, from ``costs``), and a table of every trial. Everything comes from the study's storage, so a
report can be written for any study ``ragopt tune`` stored, and the same study stays readable by
optuna-dashboard (plain Optuna trials, params, values and user attributes).
"""

from __future__ import annotations

import html
import json
import math
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ragopt._imports import require
from ragopt._io import atomic_write_text
from ragopt._urls import redact_url
from ragopt.errors import ConfigError

__all__ = ["write_report", "load_study"]


def load_study(study_name: str, storage: str) -> Any:
    """Load a study; a missing one raises :class:`ConfigError` listing the studies in that storage."""
    optuna = require("optuna", "tune", "study reports")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    shown = redact_url(storage)  # as it appears in errors: no password
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        db = storage[len("sqlite:///") :]
        if db and db != ":memory:" and not Path(db).is_file():
            raise ConfigError("storage", f"no study database at {db} (storage {shown!r})")
    try:
        names = optuna.study.get_all_study_names(storage=storage)
    except Exception as e:
        raise ConfigError("storage", f"cannot read study storage {shown!r}: {e}") from e
    if study_name not in names:
        listed = ", ".join(sorted(names)) if names else "none"
        raise ConfigError("study", f"no study named {study_name!r} in {shown} (studies there: {listed})")
    return optuna.load_study(study_name=study_name, storage=storage)


# ---------------------------------------------------------------------------------------------------
# formatting helpers


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _params_str(params: dict[str, Any]) -> str:
    return _esc(", ".join(f"{k}={_fmt(v)}" for k, v in params.items()))


class _Sections:
    """Collects report sections; figures become plotly divs (plotly.js is included once, in <head>)."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.n_figures = 0

    def add(self, anchor: str, title: str, body: str) -> None:
        self.parts.append(f'<section id="{anchor}"><h2>{_esc(title)}</h2>\n{body}\n</section>')

    def figure(self, anchor: str, title: str, make: Callable[[], Any], note: str = "") -> None:
        """Add a plot made by ``make()``; a failure becomes a note in the report instead of an error."""
        try:
            fig = make()
            fig.update_layout(height=450)
            div = fig.to_html(
                full_html=False, include_plotlyjs=False, div_id=f"plot-{anchor}", config={"responsive": True}
            )
            self.n_figures += 1
            body = (f"<p>{_esc(note)}</p>" if note else "") + div
        except Exception as e:  # plotting must never lose the rest of the report
            body = f'<p class="note">Not shown: {_esc(type(e).__name__)}: {_esc(e)}</p>'
        self.add(anchor, title, body)

    def note(self, anchor: str, title: str, text: str) -> None:
        self.add(anchor, title, f'<p class="note">{_esc(text)}</p>')


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;font-size:.9em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.best td{background:#eef8ee}
pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
.note{color:#8a5a00}nav a{margin-right:1em}
td.err{color:#a00;max-width:40em;word-break:break-word}
"""


# ---------------------------------------------------------------------------------------------------
# report


def write_report(study_name: str, storage: str, out: str | Path) -> Path:
    """Write the HTML report of study ``study_name`` in ``storage`` (a database URL) to ``out``."""
    optuna = require("optuna", "tune", "study reports")
    go = require("plotly.graph_objects", "tune", "study reports")
    get_plotlyjs = require("plotly.offline", "tune", "study reports").get_plotlyjs

    study = load_study(study_name, storage)
    states = optuna.trial.TrialState
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    complete = [t for t in trials if t.state == states.COMPLETE]
    directions = [d.name.lower() for d in study.directions]
    rcfg = study.user_attrs.get("ragopt_config") or {}
    metrics = list((rcfg.get("objective") or {}).get("metrics") or [])
    if len(metrics) != len(directions):
        metrics = [f"objective {i}" for i in range(len(directions))]
    multi = len(directions) > 1
    vis = optuna.visualization
    sec = _Sections()

    # -- summary --------------------------------------------------------------------------------
    by_state: dict[str, int] = {}
    for t in trials:
        by_state[t.state.name] = by_state.get(t.state.name, 0) + 1
    best_numbers: set[int] = set()
    rows = [
        ("study", _esc(study.study_name)),
        ("storage", _esc(storage)),
        ("objectives", _esc(", ".join(f"{m} ({d})" for m, d in zip(metrics, directions)))),
        (
            "trials",
            _esc(f"{len(trials)} (" + ", ".join(f"{k.lower()}: {v}" for k, v in sorted(by_state.items())) + ")"),
        ),
    ]
    if complete:
        if multi:
            front = study.best_trials
            best_numbers = {t.number for t in front}
            rows.append(("Pareto-optimal trials", _esc(", ".join(str(t.number) for t in front))))
        else:
            best = study.best_trial
            best_numbers = {best.number}
            rows += [
                ("best value", _esc(f"{metrics[0]} = {_fmt(best.value)}")),
                ("best trial", _esc(best.number)),
                ("best params", _params_str(best.params)),
            ]
    else:
        rows.append(("best", "no complete trial yet"))
    if rcfg.get("dataset"):
        rows.append(("dataset", _esc(f"{rcfg['dataset']} [{rcfg.get('split', '')}]")))
    if rcfg.get("tuner"):
        rows.append(("tuner", _esc(rcfg["tuner"])))
    body = _table(["", ""], rows, "summary")
    if rcfg:
        body += "<h3>ragopt config</h3><pre>" + _esc(json.dumps(rcfg, indent=2, sort_keys=True)) + "</pre>"
    sec.add("summary", "Summary", body)

    def target(i: int) -> Callable[[Any], float]:
        return lambda t: t.values[i]

    # -- optimisation history -------------------------------------------------------------------
    if not complete:
        sec.note("history", "Optimisation history", "no complete trial yet")
    elif not multi:
        sec.figure(
            "history", "Optimisation history", lambda: vis.plot_optimization_history(study, target_name=metrics[0])
        )
    else:
        for i, m in enumerate(metrics):
            sec.figure(
                f"history-{i}",
                f"Optimisation history: {m}",
                lambda i=i, m=m: vis.plot_optimization_history(study, target=target(i), target_name=m),
            )

    # -- parameter importances ------------------------------------------------------------------
    varying = sorted(
        {name for t in complete for name in t.params if len({repr(u.params.get(name)) for u in complete}) > 1}
    )
    if len(complete) < 2 or not varying:
        sec.note(
            "importances",
            "Parameter importances",
            "needs at least 2 complete trials and a parameter that varies between them",
        )
    else:

        def importances(i: int, m: str) -> Any:
            # the default evaluator (PED-ANOVA) ranks what leads to *low* targets: flip maximised ones
            sign = -1.0 if directions[i] == "maximize" else 1.0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return vis.plot_param_importances(
                    study, target=(lambda t: sign * t.values[i]) if multi else None, target_name=m
                )

        for i, m in enumerate(metrics if multi else metrics[:1]):
            sec.figure(
                f"importances-{i}" if multi else "importances",
                f"Parameter importances: {m}",
                lambda i=i, m=m: importances(i, m),
            )

    # -- parallel coordinates -------------------------------------------------------------------
    if complete:
        sec.figure(
            "parallel",
            "Parallel coordinates",
            lambda: vis.plot_parallel_coordinate(study, target=target(0) if multi else None, target_name=metrics[0]),
        )
    else:
        sec.note("parallel", "Parallel coordinates", "no complete trial yet")

    # -- Pareto front ---------------------------------------------------------------------------
    if multi:
        if not complete:
            sec.note("pareto", "Pareto front", "no complete trial yet")
        elif len(directions) > 3:
            sec.note("pareto", "Pareto front", f"{len(directions)} objectives: the plot takes 2 or 3")
        else:
            sec.figure("pareto", "Pareto front", lambda: vis.plot_pareto_front(study, target_names=metrics))
            front = sorted(study.best_trials, key=lambda t: t.values[0], reverse=directions[0] == "maximize")
            sec.parts[-1] = sec.parts[-1].replace(
                "</section>",
                _table(
                    ["trial", *metrics, "params"],
                    [[t.number, *(_fmt(v) for v in t.values), _params_str(t.params)] for t in front],
                )
                + "</section>",
            )

    # -- cost per stage -------------------------------------------------------------------------
    with_secs = [
        t for t in trials if isinstance(t.user_attrs.get("stage_seconds"), dict) and t.user_attrs["stage_seconds"]
    ]
    stages = list(dict.fromkeys(s for t in with_secs for s in t.user_attrs["stage_seconds"]))
    totals: dict[str, list[float]] = {}
    for t in trials:
        for k, v in (t.user_attrs.get("costs") or {}).items():
            if isinstance(v, (int, float)):
                totals.setdefault(k, []).append(float(v))
    cost_body = ""
    if stages:

        def cost_fig() -> Any:
            fig = go.Figure(
                [
                    go.Bar(
                        name=s,
                        x=[t.number for t in with_secs],
                        y=[float(t.user_attrs["stage_seconds"].get(s, 0.0)) for t in with_secs],
                    )
                    for s in stages
                ]
            )
            fig.update_layout(
                barmode="stack", title="Seconds per stage, per trial", xaxis_title="trial", yaxis_title="seconds"
            )
            return fig

        sec.figure("cost", "Cost per stage", cost_fig)
    else:
        sec.note("cost", "Cost per stage", "no trial recorded stage timings (user attribute stage_seconds)")
    if totals:
        cost_body = "<h3>Cost counters</h3>" + _table(
            ["counter", "total", "mean per trial", "trials"],
            [[_esc(k), _fmt(sum(v)), _fmt(sum(v) / len(v)), len(v)] for k, v in sorted(totals.items())],
            "costs",
        )
    else:
        cost_body = '<p class="note">No cost counters recorded (user attribute costs).</p>'
    sec.parts[-1] = sec.parts[-1].replace("</section>", cost_body + "</section>")

    # -- trials ---------------------------------------------------------------------------------
    rows = []
    for t in trials:
        lat = t.user_attrs.get("latency_ms")
        err = t.user_attrs.get("error", "") if t.state != states.COMPLETE else ""
        cls = ' class="best"' if t.number in best_numbers else ""
        state = t.state.name
        if "repeat_of" in t.user_attrs:  # took an earlier trial's result (``repeats: reuse``)
            state += f" (repeat of {t.user_attrs['repeat_of']})"
        rows.append(
            f"<tr{cls}><td>{t.number}</td><td>{_esc(state)}</td>"
            f"<td>{_esc(_fmt(list(t.values)) if t.values else '')}</td><td>{_params_str(t.params)}</td>"
            f'<td>{_esc(_fmt(lat))}</td><td class="err">{_esc(err)}</td></tr>'
        )
    head = "".join(f"<th>{h}</th>" for h in ("trial", "state", "values", "params", "latency_ms", "error"))
    sec.add(
        "trials",
        f"Trials ({len(trials)})",
        f'<table class="trials"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>',
    )

    nav = "".join(
        f'<a href="#{a}">{_esc(t)}</a>'
        for a, t in [
            ("summary", "Summary"),
            ("history" if not multi else "history-0", "History"),
            ("pareto", "Pareto") if multi else ("parallel", "Parallel"),
            ("cost", "Cost"),
            ("trials", "Trials"),
        ]
    )
    page = (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>ragopt study {_esc(study.study_name)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{get_plotlyjs()}</script></head><body>'
        f"<h1>ragopt study <code>{_esc(study.study_name)}</code></h1><nav>{nav}</nav>\n"
        + "\n".join(sec.parts)
        + "\n</body></html>\n"
    )
    return atomic_write_text(out, page)
