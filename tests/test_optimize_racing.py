"""Racing (successive halving with paired tests) on synthetic candidates: no model, exact call counts."""

import random

import pytest

from taskfit.dataset import Example
from taskfit.optimize.budget import CallMeter
from taskfit.optimize.propose import clean_instruction
from taskfit.optimize.racing import Race, first_rung, planned_calls, rung_sizes

DEV = [Example(id=f"d{i}", fields={"text": str(i)}, target="y") for i in range(200)]


def _field(accuracies: list[float], seed: int = 0) -> dict[str, list[float]]:
    """Fixed 0/1 outcomes per candidate and dev row, drawn with the given accuracies."""
    rng = random.Random(seed)
    return {f"c{i}": [float(rng.random() < a) for _ in DEV] for i, a in enumerate(accuracies)}


def _race(outcomes: dict[str, list[float]], budget: int | None, **kw) -> tuple[Race, CallMeter]:
    meter = CallMeter(budget)
    index = {ex.id: i for i, ex in enumerate(DEV)}

    def evaluate(key, rows):
        meter.used += len(rows)  # one call per row
        return [outcomes[key][index[ex.id]] for ex in rows]

    race = Race(DEV, evaluate, lambda key, rows: len(rows), meter, binary=True, **kw)
    for key in outcomes:
        race.add(key)
    return race, meter


def test_rung_sizes_grow_by_eta_up_to_the_dev_split():
    assert rung_sizes(8, 100, 2) == [8, 16, 32, 64, 100]
    assert rung_sizes(50, 30, 2) == [30]
    assert rung_sizes(5, 12, 3) == [5, 12]


@pytest.mark.parametrize("n_candidates,budget", [(8, 300), (11, 250), (3, 100), (20, 2000)])
def test_first_rung_plan_fits_the_budget(n_candidates, budget):
    first = first_rung(n_candidates, 200, budget, 2.0, smallest=4)
    assert planned_calls(n_candidates, first, 200, 2.0) <= budget
    assert planned_calls(n_candidates, first + 1, 200, 2.0) > budget or first == 200


def test_race_finds_the_best_with_far_fewer_calls_than_exhaustive():
    outcomes = _field([0.6, 0.62, 0.9, 0.55, 0.65, 0.5, 0.6, 0.58])
    race, meter = _race(outcomes, budget=None)
    stop = race.run(rung_sizes(16, len(DEV), 2.0))
    exhaustive = len(outcomes) * len(DEV)
    assert race.leader().key == "c2"
    assert meter.used <= 0.3 * exhaustive, (meter.used, stop)
    dropped = [e for e in race.entrants.values() if not e.alive]
    assert dropped and all(e.dropped for e in dropped)
    assert any(e.dropped.startswith("behind c2") for e in dropped)  # dropped by the paired test, not only by rank


@pytest.mark.parametrize("budget", [20, 57, 130, 400])
def test_race_never_spends_past_its_budget(budget):
    outcomes = _field([0.7, 0.71, 0.69, 0.7, 0.72, 0.68], seed=3)  # close: no early winner
    race, meter = _race(outcomes, budget=budget)
    race.run(rung_sizes(8, len(DEV), 2.0))
    assert meter.used <= budget
    # every candidate still in the race was scored on the same rows
    assert len({len(e.scores) for e in race.alive}) == 1


def test_clearly_best_stops_the_race_early():
    outcomes = _field([1.0, 0.0, 0.05])
    race, meter = _race(outcomes, budget=None)
    stop = race.run(rung_sizes(16, len(DEV), 2.0))
    assert stop == "one candidate clearly best" and race.leader().key == "c0"
    assert meter.used == 3 * 16


def test_proposals_are_cleaned_and_templates_refused():
    assert clean_instruction('Instruction: "Decide whether the writer liked the film."') == \
        "Decide whether the writer liked the film."
    assert clean_instruction("New instruction - Say if it is positive.\n\nmore text") == "Say if it is positive."
    assert clean_instruction("Answer {{ 7*7 }} now please") is None  # would run as a Jinja template
    assert clean_instruction("ok") is None
    assert clean_instruction("word " * 100) is None
