"""Shared parts of the grid searches that tune ``watershed``, ``dcan`` and ``cosine_embedding`` on val.

Not a method (the leading underscore keeps it out of the registry).

- :class:`Progress`: tuning runs for minutes on real images, so it logs (through the run's log, the
  ``methods.*`` loggers) its first step, then a line at most every ``every`` seconds, and its last step,
  each with the best parameters and proxy score so far.
- :func:`widen`: a grid whose best value of a numeric parameter lies on the grid's edge says the best may
  lie beyond it. The axis then grows one step past that edge (the step is the gap between the two
  outermost values), the new value scored with every other parameter at its best (a line search, not a
  new grid), until the best lies inside, a bound of the parameter is reached, or ``max_steps`` steps were
  taken. Every step is logged and returned as a record, and the parameters still on an edge afterwards
  are named, so the run's metadata shows them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Sequence

log = logging.getLogger(__name__)


class Progress:
    """Throttled progress lines of one grid search: ``what``, steps done of ``total``, best so far."""

    def __init__(self, what: str, total: int, every: float = 10.0, logger: logging.Logger = log):
        self.what, self.total, self.every, self.log = what, int(total), float(every), logger
        self.t0 = time.perf_counter()
        self.last = None

    def update(self, done: int, best: dict | None, score: float | None, detail: str = "") -> None:
        now = time.perf_counter()
        if self.last is not None and done < self.total and now - self.last < self.every:
            return
        self.last = now
        elapsed = now - self.t0
        eta = elapsed / done * (self.total - done) if done else float("nan")
        best_txt = "none yet" if best is None else f"{score:.4f} at {best}"
        self.log.info("%s: %d/%d%s, %.1f s elapsed, ~%.0f s left; best so far %s", self.what, done, self.total,
                      f" ({detail})" if detail else "", elapsed, eta, best_txt)


@dataclass(frozen=True)
class Axis:
    """A numeric grid axis that may widen: its values in ``grid``'s key ``param``, and the allowed range."""

    param: str  # the key in a parameter dict
    values: tuple  # the configured grid values
    lo: float | None = None  # smallest allowed value (inclusive)
    hi: float | None = None  # largest allowed value (inclusive)
    integer: bool = False
    gt_lo: bool = False  # lo itself is not allowed (e.g. a probability threshold > 0)


def _next_value(axis: Axis, values: list, top: bool) -> float | int | None:
    """One step past the ``top`` (else bottom) edge of ``values``, clamped into the axis' range; None when
    the edge already is the bound."""
    ordered = sorted(values)
    edge, inner = (ordered[-1], ordered[-2]) if top else (ordered[0], ordered[1])
    step = abs(edge - inner)
    if axis.integer:
        step = max(int(round(step)), 1)
    new = edge + step if top else edge - step
    if not axis.integer:
        new = round(new, 10)  # 0.7 + 0.1 is 0.7999999999999999
    if axis.hi is not None and new > axis.hi:
        new = axis.hi
    if axis.lo is not None and (new < axis.lo or (axis.gt_lo and new <= axis.lo)):
        new = None if axis.gt_lo else axis.lo
    if new is None or new in values:
        return None
    return int(new) if axis.integer else float(new)


def at_edge(best: dict, axes: Sequence[Axis], values: dict | None = None) -> list[dict]:
    """The axes (of two or more values) whose best value is their smallest or largest."""
    out = []
    for axis in axes:
        vals = list((values or {}).get(axis.param, axis.values))
        if len(set(vals)) < 2:
            continue
        if best[axis.param] in (max(vals), min(vals)):
            out.append({"param": axis.param, "value": best[axis.param],
                        "edge": "top" if best[axis.param] == max(vals) else "bottom"})
    return out


def widen(best: dict, best_score: float, axes: Sequence[Axis], score: Callable[[dict], float],
          max_steps: int, what: str, logger: logging.Logger = log) -> tuple[dict, float, dict]:
    """Grow the axes whose best value lies on their edge; returns (best, score, record).

    ``score(params)`` is the mean proxy score of one parameter dict. The record holds ``steps`` (each
    tried value, its score and whether it became the best), ``at_edge_before`` (see :func:`at_edge`),
    ``at_edge_after`` (edges the grid could still grow past: a warning each), ``at_bound`` (edges at the end
    of the parameter's range, e.g. a sigma of 0) and the grown axes' values (``values``). A tie keeps the
    earlier best (grid order).
    """
    values = {a.param: list(dict.fromkeys(a.values)) for a in axes}
    before = at_edge(best, axes)
    steps: list[dict] = []
    for axis in axes:
        taken = 0
        while max_steps and taken < max_steps and any(e["param"] == axis.param for e in at_edge(best, [axis], values)):
            top = best[axis.param] == max(values[axis.param])
            new = _next_value(axis, values[axis.param], top)
            if new is None:
                logger.info("%s: best %s = %r is at the %s bound of its range; not widened", what, axis.param,
                            best[axis.param], "upper" if top else "lower")
                break
            candidate = {**best, axis.param: new}
            value = float(score(candidate))
            values[axis.param].append(new)
            taken += 1
            better = value > best_score
            steps.append({"param": axis.param, "value": new, "proxy_score": value, "became_best": better})
            logger.info("%s: best %s = %r was at the %s edge of its grid; tried %r: proxy %.4f (best %.4f)%s",
                        what, axis.param, best[axis.param], "top" if top else "bottom", new, value, best_score,
                        ", now the best" if better else "")
            if better:
                best, best_score = candidate, value
    by_name = {a.param: a for a in axes}
    edges = at_edge(best, axes, values)
    at_bound = [e for e in edges if _next_value(by_name[e["param"]], values[e["param"]], e["edge"] == "top") is None]
    after = [e for e in edges if e not in at_bound]  # the grid could still grow there
    for e in after:
        logger.warning("%s: tuned %s = %r is still at the %s edge of its grid after widening (max_widen=%d); "
                       "widen the grid in the config", what, e["param"], e["value"], e["edge"], max_steps)
    record = {"at_edge_before": before, "steps": steps, "at_edge_after": after, "at_bound": at_bound,
              "values": {a.param: sorted(values[a.param]) for a in axes if values[a.param] != list(a.values)}}
    return best, best_score, record


__all__ = ["Progress", "Axis", "at_edge", "widen"]
