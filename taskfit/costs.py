"""What a leaderboard row costs: once (training, a teacher's labelling) and per query (tokens, device time).

A local model's per-query cost is its model time priced at the serving device's hourly rate
(``price_per_hour`` on the model entry, else the task's ``costs.price_per_hour``); a remote API's is its
token bill. A fine-tuned row also costs its measured training time at ``costs.train_price_per_hour``,
plus, for a distilled row, its teacher's labelling bill (the row's ``labelling`` entry:
``{"cost": $ from token prices, "time_s": the teacher's model time}``, else the dollars in ``tune.distill``).

With no price anywhere, costs are counted in machine-hours (training and serving on the machine that was
measured), so a break-even volume is still meaningful: it does not depend on the hourly rate when one
machine does both.

Model time is the row's work x the model's calibrated unit costs where a calibration applies (a local
transformers model, a tuned classifier or adapter: ``taskfit.calibration``): prompt tokens encoded and tokens
generated per query, padded tokens trained on. That does not move with other load on the machine; its
uncertainty is the calibration repeats' spread (at least 5%). Elsewhere (a plugin backend without a
calibration hook, distillation's teacher time) it is the time measured during the run, counted as
``±tolerance``. The measured times stay on the row as evidence (``time_per_1k_s``, ``tune.train_time_s``).

The module imports only pydantic at run time, so the task-file schema can use ``CostsConfig``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from taskfit.types import ReportRow

DOLLARS, MACHINE_HOURS = "$", "machine-h"
# How far a cost measured as time may be off: wall and CPU time on a shared machine swing with other load
# (2-5x seen on 2 busy cores), so two rows whose timed costs differ by less than this are a tie on cost.
# Token bills are exact and carry no such margin.
TIME_TOLERANCE = 0.25


class CostsConfig(BaseModel):
    """The task file's ``costs:`` section: hourly prices that turn measured time into money."""

    model_config = ConfigDict(extra="forbid")
    price_per_hour: float | None = Field(
        None, ge=0, description="$ per hour of the machine that serves local models (a CPU box, a GPU's hourly "
        "rate); applies to every local row whose model entry sets no `price_per_hour`, tuned models included.")
    train_price_per_hour: float | None = Field(
        None, ge=0, description="$ per hour of the machine that trains the `tuning:` models (default: "
        "`price_per_hour`).")
    volume: str | None = Field(
        None, description="The query volume the recommendation prices at when `--volume` is not given, e.g. "
        "`1M`, `250k/month`, `1825000/year` (one-time costs are spread over this many queries).")
    latency_p50_ms: float | None = Field(
        None, gt=0, description="The slowest median latency a recommended row may have when `--latency-p50-ms` "
        "is not given.")
    tolerance: float = Field(
        TIME_TOLERANCE, ge=0, lt=1, description="Relative uncertainty of costs measured as time (training, "
        "model time per query): a cheaper row is only preferred to a better-scoring one the data cannot "
        "separate from it when it is cheaper beyond this margin (token bills count as exact).")

    @field_validator("volume")
    @classmethod
    def _volume(cls, v: str | None) -> str | None:
        if v is not None:
            parse_volume(str(v))
        return v


@dataclass(frozen=True)
class RowCost:
    """One row's costs in ``unit``; ``total(n)`` is what ``n`` queries cost, the one-time part included."""

    one_time: float
    per_query: float
    unit: str
    training: float = 0.0
    labelling: float = 0.0
    tokens_per_query: float = 0.0
    device_per_query: float = 0.0
    timed_one_time: float = 0.0  # the part of ``one_time`` that comes from model time (not a token bill)
    # relative uncertainty of the timed part when all of it is work x calibrated unit costs; None: measured
    # time, whose uncertainty is the caller's tolerance (costs.tolerance)
    uncertainty: float | None = None
    basis: str = "time"  # work | time | tokens (LeaderboardRow.cost_basis)

    def total(self, volume: float) -> float:
        return self.one_time + self.per_query * volume

    def timed(self, volume: float) -> float:
        """The part of ``total(volume)`` that comes from model time rather than a token bill."""
        return self.timed_one_time + self.device_per_query * volume

    def bounds(self, volume: float, tolerance: float) -> tuple[float, float]:
        """``total(volume)`` with its timed part lower and higher by its uncertainty: the calibration's for
        a cost priced by work, else ``tolerance`` (measured time moves with machine load)."""
        margin = tolerance if self.uncertainty is None else self.uncertainty
        total, timed = self.total(volume), self.timed(volume)
        return total - timed * margin, total + timed * margin


def cheaper_beyond(a: RowCost, b: RowCost, volume: float, tolerance: float) -> bool:
    """Whether ``a`` costs less than ``b`` at ``volume`` even when both timed parts are off by their
    uncertainty (``tolerance`` for measured time)."""
    return a.bounds(volume, tolerance)[1] < b.bounds(volume, tolerance)[0]


@dataclass(frozen=True)
class Volume:
    """How many queries the recommendation prices at, and over what period (``per``: '' or 'month'...)."""

    queries: float
    per: str = ""

    def text(self) -> str:
        return f"{_count(self.queries)} queries" + (f" a {self.per}" if self.per else "")


def parse_volume(text: str) -> Volume:
    """``1000000``, ``1,000,000``, ``1e6``, ``250k``, ``1M/month`` -> a Volume; ValueError on anything else."""
    m = re.fullmatch(r"\s*([0-9][0-9_,]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kmb]?)\s*(?:/\s*([a-z]+))?\s*", text,
                     re.IGNORECASE)
    if not m:
        raise ValueError(f"not a query volume: {text!r} (examples: 1000000, 250k, 1M/month)")
    number = float(m.group(1).replace(",", "").replace("_", ""))
    number *= {"": 1, "k": 1e3, "m": 1e6, "b": 1e9}[m.group(2).lower()]
    return Volume(number, (m.group(3) or "").lower())


def unit_of(rows: Sequence[ReportRow]) -> str:
    """Dollars when any row carries a price (tokens or an hourly rate), else machine-hours."""
    priced = any(
        (r.cost_per_1k or 0) > 0 or r.price_per_hour is not None
        or r.train_price_per_hour is not None or labelling_of(r).get("cost")
        for r in rows
    )
    return DOLLARS if priced else MACHINE_HOURS


def model_seconds_per_1k(row: ReportRow) -> float:
    """Model time per 1,000 queries: from the row's work where a calibration applies, else as measured."""
    return float(row.time_per_1k_s if row.work_time_per_1k_s is None else row.work_time_per_1k_s)


def train_seconds(row: ReportRow) -> float:
    """Training time: the tuned model's work x its calibrated step cost where measured, else as measured."""
    tune = row.tune or {}
    work = tune.get("train_work_s")
    return float(tune.get("train_time_s") or 0.0) if work is None else float(work)


def row_cost(row: ReportRow, unit: str) -> RowCost:
    """The one-time and per-query cost of a row, from its work (or measured times), tokens and prices."""
    labelling = labelling_of(row)
    train_s = train_seconds(row)
    model_s = model_seconds_per_1k(row) / 1000  # model time per query
    if unit == MACHINE_HOURS:
        training = train_s / 3600
        label_cost = float(labelling.get("time_s") or 0.0) / 3600
        tokens, device = 0.0, model_s / 3600
        timed_one_time = training + label_cost
    else:
        serve_rate = row.price_per_hour or 0.0
        train_rate = row.train_price_per_hour
        train_rate = serve_rate if train_rate is None else train_rate
        training = train_s / 3600 * train_rate
        # the teacher ran on the serving machine, or behind an API whose token bill is its cost
        label_time = float(labelling.get("time_s") or 0.0) / 3600 * serve_rate
        label_cost = float(labelling.get("cost") or 0.0) + label_time
        tokens = float(row.cost_per_1k or 0.0) / 1000
        device = model_s / 3600 * serve_rate
        timed_one_time = training + label_time
    by_work = row.cost_basis == "work" and not labelling.get("time_s")  # a teacher's time is measured time
    return RowCost(training + label_cost, tokens + device, unit, training, label_cost, tokens, device,
                   timed_one_time, row.cost_uncertainty if by_work else None, row.cost_basis)


def basis_text(cost: RowCost, tolerance: float) -> str:
    """How a row's cost was obtained, with its uncertainty: 'work x unit cost ±5%', 'measured time ±25%',
    'token bill'."""
    if cost.basis == "tokens" and not cost.timed(1.0):
        return "token bill"
    if cost.uncertainty is not None:
        return f"work x unit cost ±{cost.uncertainty:.0%}"
    return f"measured time ±{tolerance:.0%}"


def labelling_of(row: ReportRow) -> dict:
    """A distilled row's teacher bill: its ``labelling`` entry, else the dollars its tune record holds."""
    if row.labelling:
        return row.labelling
    bill = ((row.tune or {}).get("distill") or {}).get("labelling") or {}
    return {"cost": bill.get("dollars") or 0.0} if bill else {}


def break_even(cheap_upfront: RowCost, cheap_per_query: RowCost) -> float | None:
    """The volume from which ``cheap_per_query`` costs less in total than ``cheap_upfront``: 0 when it
    always does, None when it never does."""
    saving = cheap_upfront.per_query - cheap_per_query.per_query
    extra = cheap_per_query.one_time - cheap_upfront.one_time
    if extra <= 0 and saving >= 0:
        return 0.0
    if saving <= 0:
        return None
    return extra / saving


def money(value: float, unit: str) -> str:
    """$1,234, $12.50, $0.0031; or 23.9 machine-h."""
    if unit == MACHINE_HOURS:
        if value == 0:
            return "0 machine-h"
        digits = 1 if value >= 10 else 2 if value >= 0.1 else 4
        return f"{value:,.{digits}f} machine-h"
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 0.1:
        return f"${value:,.2f}"
    return f"${value:.2g}" if value >= 1e-4 else f"${value:.1e}"


def _count(n: float) -> str:
    if not math.isfinite(n):
        return "never"
    n = float(f"{n:.2g}") if n >= 100 else round(n)  # a break-even figure is an estimate: two digits
    return f"{n:,.0f}"


def count(n: float | None) -> str:
    """A query count as people read it, two significant digits: 1,000,000 / 4,300; None -> 'never'."""
    return "never" if n is None else _count(n)
