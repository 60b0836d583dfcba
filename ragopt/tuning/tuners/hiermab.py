"""Hierarchical multi-armed bandit tuning, as in AutoRAG-HP.

Two levels: the upper bandit chooses which hyperparameter *group* to move (a parameter's ``group``, or the
parameter itself); the lower bandit chooses the group's values, the other groups held at the best
configuration found so far. Both levels use UCB1 or Thompson sampling (Gaussian posteriors).

* Offline (default): every pull evaluates a configuration on the whole tuning set, so its reward is exact;
  the lower level scores *untried* value combinations by per-value statistics (how well each value of each
  parameter has done across all pulls) and never pays twice for one configuration.
* Online (``online=True``): each arriving batch of queries is one pull; rewards are per-query values
  (``tell(params, mean, weight=n_queries)``); configurations may be pulled again and their estimates
  sharpen. :func:`run_online` drives it over a stream of batches within a budget of evaluations or calls.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ragopt.errors import ConfigError
from ragopt.tuning.tuners.base import Tuner, Value, check_choice, config_key

__all__ = ["HierMABTuner", "run_online", "OnlineResult", "POLICIES"]

#: the bandit policies ``HierMABTuner(policy=...)`` accepts (the registry's ``hiermab_ts`` presets ``thompson``)
POLICIES = ("ucb1", "thompson")


class _Stats:
    __slots__ = ("n", "total", "sq")

    def __init__(self) -> None:
        self.n = 0.0
        self.total = 0.0
        self.sq = 0.0

    def add(self, r: float, w: float = 1.0) -> None:
        self.n += w
        self.total += r * w
        self.sq += r * r * w

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def var(self) -> float:
        if self.n < 2:
            return 0.25
        return max(self.sq / self.n - self.mean**2, 1e-6)


class HierMABTuner(Tuner):
    """Hierarchical bandit over parameter groups (upper level) and their values (lower level)."""

    name = "hiermab"

    def _configure(self, policy: str = "ucb1", c: float = 1.0, online: bool = False, max_arms: int = 512) -> None:
        check_choice("policy", policy, POLICIES)
        self.policy = policy
        self.name = "hiermab" if policy == "ucb1" else "hiermab_ts"
        self.c = c
        self.online = online
        self.max_arms = max_arms
        groups: dict[str, list] = {}
        for p in self.space.params:
            groups.setdefault(p.group or p.name, []).append(p)
        self.groups = groups
        self.group_stats: dict[str, _Stats] = defaultdict(_Stats)
        self.value_stats: dict[tuple[str, str], _Stats] = defaultdict(_Stats)
        self.config_stats: dict[tuple, _Stats] = defaultdict(_Stats)
        self._last_group: dict[tuple, str] = {}
        self._lo = math.inf
        self._hi = -math.inf

    # -- rewards ---------------------------------------------------------------------------------
    def _norm(self, r: float) -> float:
        """Rewards rescaled to [0, 1] by the range seen so far (metrics usually are already)."""
        if self._hi <= self._lo:
            return 0.5
        return (r - self._lo) / (self._hi - self._lo)

    def _groups_moved(self, params: Mapping[str, Any]) -> list[str]:
        """Groups whose values differ from the incumbent: the pull's arm when it was not proposed here
        (a study rebuilt from storage, or a configuration told from outside)."""
        if not self.history[:-1]:
            return []
        inc = self._incumbent_before
        return [g for g, ps in self.groups.items() if any(params.get(p.name) != inc.get(p.name) for p in ps)]

    def tell(self, params: Mapping[str, Any], value: Value, weight: float = 1.0) -> None:
        self._incumbent_before = self._incumbent()
        key = config_key(params)
        self.asked.add(key)
        self.history.append((dict(params), value))
        r = self.score(value)
        if r == -math.inf:
            r = self._lo if self._lo < math.inf else 0.0
        else:
            self._lo, self._hi = min(self._lo, r), max(self._hi, r)
        self.config_stats[key].add(r, weight)
        for name, v in params.items():
            self.value_stats[(name, repr(v))].add(r, weight)
        groups = [self._last_group[key]] if key in self._last_group else self._groups_moved(params)
        for g in groups:
            self.group_stats[g].add(r, weight)

    # -- selection -------------------------------------------------------------------------------
    def _index(self, st: _Stats, total: float) -> float:
        """UCB1 index or a Thompson draw, on normalised rewards; unseen arms come first."""
        if st.n == 0:
            return math.inf
        mean = self._norm(st.mean)
        if self.policy == "ucb1":
            return mean + self.c * math.sqrt(2.0 * math.log(max(total, 1.0)) / st.n)
        spread = self._hi - self._lo if self._hi > self._lo else 1.0
        sd = math.sqrt(st.var) / spread / math.sqrt(st.n)
        return self.rng.gauss(mean, max(sd, 1e-3) * self.c)

    def incumbent(self) -> dict[str, Any]:
        """The best configuration so far: by mean reward over its pulls when online, else the best trial (the
        template's configuration, or a random one, before any tell). What an online study serves."""
        return self._incumbent()

    def _incumbent(self) -> dict[str, Any]:
        if self.online:
            scored = [(self._norm(s.mean), k) for k, s in self.config_stats.items() if s.n > 0]
            if scored:
                best_key = max(scored)[1]
                for p, _ in self.history:
                    if config_key(p) == best_key:
                        return dict(p)
        b = self.best
        if b is not None:
            return dict(b[0])
        return dict(self.defaults) if self.defaults else self._random_config()

    def _arms(self, group: str, inc: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Configurations that change only ``group``'s parameters of the incumbent (conditions respected)."""
        params = self.groups[group]
        grids = [p.grid() for p in params]
        arms, seen = [], set()
        for combo in itertools.islice(itertools.product(*grids), self.max_arms):
            cand = dict(inc)
            for p, v in zip(params, combo):
                cand[p.name] = v
            cand = self.space.complete(cand, self._default_for)
            k = config_key(cand)
            if k not in seen:
                seen.add(k)
                arms.append(cand)
        return arms

    def _arm_index(self, arm: Mapping[str, Any], group: str, total: float) -> float:
        if self.online:
            st = self.config_stats.get(config_key(arm))
            if st is None or st.n == 0:
                # unseen configuration: optimistic estimate from its values
                vals = [
                    self._index(self.value_stats[(p.name, repr(arm[p.name]))], total)
                    for p in self.groups[group]
                    if p.name in arm
                ]
                return sum(vals) / len(vals) if vals else math.inf
            return self._index(st, total)
        vals = [
            self._index(self.value_stats[(p.name, repr(arm[p.name]))], total)
            for p in self.groups[group]
            if p.name in arm
        ]
        return sum(vals) / len(vals) if vals else math.inf

    def _propose(self) -> dict[str, Any]:
        inc = self._incumbent()
        if not self.history and not self.asked:
            return inc
        total = sum(s.n for s in self.config_stats.values()) + 1.0
        order = sorted(self.groups, key=lambda g: (-self._index(self.group_stats[g], total), g))
        for g in order:
            arms = self._arms(g, inc)
            if not self.online:
                arms = [a for a in arms if config_key(a) not in self.asked]
            if not arms:
                continue  # this group is exhausted around the incumbent
            scored = [(self._arm_index(a, g, total), i) for i, a in enumerate(arms)]
            best = max(scored)[0]
            ties = [i for s, i in scored if s == best]
            arm = arms[self.rng.choice(ties)]
            self._last_group[config_key(arm)] = g
            return arm
        return self._fallback()


class OnlineResult(dict):
    """What :func:`run_online` returns: pulls, cumulative reward, regret inputs, best configuration."""


def run_online(
    tuner: HierMABTuner,
    evaluate_batch: Callable[[dict[str, Any], Any], tuple[Sequence[float], float]],
    batches: Iterable[Any],
    budget: float | None = None,
) -> OnlineResult:
    """Online tuning: for each arriving batch of queries, pull one configuration, evaluate it on that batch
    (``evaluate_batch(params, batch) -> (per_query_rewards, cost)``), and update the bandit with the
    per-query rewards. Stops when the batches run out or the spent cost reaches ``budget`` (cost is what
    the caller counts: evaluations, LLM calls, tokens)."""
    if not tuner.online:
        raise ConfigError("online", "run_online needs HierMABTuner(online=True)")
    spent, pulls, total_reward, n_rewards = 0.0, [], 0.0, 0
    for batch in batches:
        if budget is not None and spent >= budget:
            break
        params = tuner.ask()
        rewards, cost = evaluate_batch(params, batch)
        rewards = [float(r) for r in rewards]
        mean = sum(rewards) / len(rewards) if rewards else 0.0
        tuner.tell(params, mean, weight=max(len(rewards), 1))
        spent += cost
        total_reward += sum(rewards)
        n_rewards += len(rewards)
        pulls.append({"params": params, "mean_reward": mean, "n": len(rewards), "cost": cost})
    best = tuner._incumbent()
    return OnlineResult(pulls=pulls, spent=spent, mean_reward=total_reward / max(n_rewards, 1), best=best)
