"""Racing vs exhaustive evaluation of one fixed candidate pool, in one process, with the bundled model.

Sides (the same candidates, the same dev rows held out of train, the same call cache):
  racing      taskfit's search: successive halving on growing dev minibatches, dropping candidates that a
              paired test puts behind the leader, stopping when one is clearly best or the dev split is used up;
  exhaustive  every candidate scored on the whole dev split, the best mean picked.

Prints the calls each side counts (distinct model requests, cache hits included, as the optimizer's budget
counts them), each pick, both picks' scores on the test split with 95% CIs, whether they agree within the CI,
and the number of calls DSPy's MIPROv2 `auto="light"` would plan for the same dev size, from its formula.

    .venv/bin/python benchmarks/optimize_efficiency.py --dev-size 200 --test-limit 200
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The fixed pool: instruction paraphrases (zero-shot) and demo sets (few-shot), written once, never tuned on test.
INSTRUCTIONS = [
    "Is the sentiment of this review positive or negative?",  # the task file's own (the baseline)
    "Read the movie review and decide whether the writer liked the film.",
    "Classify the review as positive or negative.",
    "What is the overall opinion of this movie review: positive or negative?",
    "Does the critic recommend this movie? Judge the feeling of the sentence.",
]


def mipro_light_calls(n_dev: int, n_train: int, predictors: int = 1) -> tuple[int, str]:
    """Calls DSPy MIPROv2(auto="light") plans for a program with ``predictors`` modules, from
    dspy/teleprompt/mipro_optimizer_v2.py (AUTO_RUN_SETTINGS, _set_num_trials_from_num_candidates,
    _estimate_lm_calls); the bootstrapping of demo sets, which that estimate leaves out, is not counted."""
    n = 6  # AUTO_RUN_SETTINGS["light"]["n"]: candidates per variable
    val = min(100, n_dev or int(n_train * 0.8))  # light's val_size; without a valset, 80% of train is held out
    trials = int(max(2 * (2 * predictors) * math.log2(n), 1.5 * n))  # instructions + demos: 2 variables/predictor
    minibatch = val > 50  # MIN_MINIBATCH_SIZE
    task_calls = 35 * trials + val * (trials // 5 + 1) if minibatch else val * trials  # minibatch_size=35
    prompt_calls = 10 + (n // 2) * predictors + (predictors + 1)  # summarizer + instructions + program-aware
    task_formula = "35*T + V*(T//5 + 1)" if minibatch else "V*T (V <= 50: no minibatches)"
    formula = (f"trials T = int(max(2*2P*log2(6), 1.5*6)) = {trials} (P={predictors} predictor); V = min(100, dev) = "
               f"{val}; task calls = {task_formula} = {task_calls}; prompt-model calls = 10 + 3P + (P+1) = "
               f"{prompt_calls}; bootstrapping not counted")
    return task_calls + prompt_calls, formula


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=str(ROOT / "examples/sst2/task.yaml"))
    ap.add_argument("--dev-size", type=int, default=200, help="dev rows held out of train")
    ap.add_argument("--test-limit", type=int, default=200, help="test rows for scoring the two picks")
    ap.add_argument("--first-rung", type=int, default=16, help="dev rows in the racing's first rung")
    ap.add_argument("--k", type=int, default=4, help="demos per few-shot candidate")
    args = ap.parse_args()
    from taskfit.lm import LM
    from taskfit.metrics import build_metric
    from taskfit.optimize.budget import CallMeter
    from taskfit.optimize.candidates import Candidate, ProgramSpec, demo_sets, to_demo
    from taskfit.optimize.racing import Race, rung_sizes
    from taskfit.optimize.search import OptimizeConfig, dev_split
    from taskfit.prompts import prompt_parts
    from taskfit.runner import BackendPool, resolve_mode
    from taskfit.stats import paired_p, score_interval
    from taskfit.strategies import StrategyContext
    from taskfit.strategies.optimized import build
    from taskfit.study import prepare, select_arms
    from taskfit.workspace import Workspace

    workspace = Workspace.open(tempfile.mkdtemp(prefix="taskfit-bench-"))  # cold cache
    task, dataset = prepare(args.task)
    c = task.config
    pool_rows, dev = dev_split(dataset, OptimizeConfig(budget=1, dev_size=args.dev_size))
    model = select_arms(task, ["zero_shot"], None)[0].model
    backend = BackendPool().get(model)
    mode = resolve_mode(task, backend)
    cache = workspace.cache
    ctx = StrategyContext(task=task, parts=prompt_parts(task), train=pool_rows, mode=mode, seed=c.data.seed)
    metric = build_metric(c.metrics[0].name, c.metrics[0].options)

    labelled = [to_demo(ex, c.inputs, "labelled") for ex in pool_rows]
    programs = [ProgramSpec(base="zero_shot", instruction=i) for i in INSTRUCTIONS]
    programs += [ProgramSpec(base="few_shot", instruction=INSTRUCTIONS[0], demos=d)
                 for _, d in demo_sets([], labelled, args.k, 3, seed=1, labels=c.labels)]
    cands = {f"c{i}": Candidate(f"c{i}", p, "fixed pool") for i, p in enumerate(programs)}

    def side(meter: CallMeter):
        lm = meter.lm(LM(backend, cache))

        def evaluate(key, rows):
            preds = build(cands[key].program, ctx).predict(rows, lm)
            return [0.0 if p.answer is None else float(metric(p.answer, ex)) for p, ex in zip(preds, rows, strict=True)]

        def cost(key, rows):
            return meter.cost(lambda dry: build(cands[key].program, ctx).predict(rows, dry), lm)

        race = Race(dev, evaluate, cost, meter, binary=metric.binary)
        for key in cands:
            race.add(key)
        return race

    print(f"task {c.name}: {len(cands)} candidates, {len(dev)} dev rows (held out of train), model {model.label()}, "
          f"mode {mode}")
    for key, cand in cands.items():
        print(f"  {key}: {cand.describe(90)}")

    t0 = time.perf_counter()
    racing_meter = CallMeter(None)
    racing = side(racing_meter)
    stop = racing.run(rung_sizes(args.first_rung, len(dev), 2.0))
    racing_s = time.perf_counter() - t0
    racing_pick = racing.leader()

    t0 = time.perf_counter()
    exhaustive_meter = CallMeter(None)
    exhaustive = side(exhaustive_meter)
    exhaustive.evaluate_to(len(dev))
    exhaustive_s = time.perf_counter() - t0
    exhaustive_pick = exhaustive.leader()

    test = dataset.split("test")[:args.test_limit]  # read only now, after both searches
    plain = LM(backend, cache)

    def on_test(key):
        preds = build(cands[key].program, ctx).predict(test, plain)
        return [0.0 if p.answer is None else float(metric(p.answer, ex)) for p, ex in zip(preds, test, strict=True)]

    test_scores = {key: on_test(key) for key in {racing_pick.key, exhaustive_pick.key}}

    def fmt(xs):
        lo, hi = score_interval(xs, metric.binary)
        return f"{sum(xs) / len(xs):.3f} [{lo:.3f}, {hi:.3f}]"

    print("\nracing:")
    for e in racing.entrants.values():
        print(f"  {e.key}: {len(e.scores):>4} dev rows, dev {fmt(e.scores)}, {e.calls:>4} calls, "
              f"{'kept' if e.alive else 'dropped: ' + e.dropped}")
    print(f"  stopped: {stop}")
    print("exhaustive:")
    for e in exhaustive.entrants.values():
        print(f"  {e.key}: {len(e.scores):>4} dev rows, dev {fmt(e.scores)}, {e.calls:>4} calls")

    r, x = test_scores[racing_pick.key], test_scores[exhaustive_pick.key]
    lo, hi = score_interval(x, metric.binary)
    within = lo <= sum(r) / len(r) <= hi
    p = paired_p(r, x, metric.binary)
    mipro, formula = mipro_light_calls(len(dev), len(pool_rows))
    print("\nside        calls  share of exhaustive  pick  test score [95% CI]       time")
    print(f"racing      {racing_meter.used:>5}  {racing_meter.used / exhaustive_meter.used:>19.1%}  {racing_pick.key:>4}  "
          f"{fmt(r):<24}  {racing_s:.0f} s (cold cache)")
    print(f"exhaustive  {exhaustive_meter.used:>5}  {1:>19.1%}  {exhaustive_pick.key:>4}  {fmt(x):<24}  "
          f"{exhaustive_s:.0f} s (racing's calls cached)")
    print(f"MIPROv2 light (planned, same dev size): {mipro} calls = {mipro / exhaustive_meter.used:.1f}x exhaustive; "
          f"{formula}")
    same = racing_pick.key == exhaustive_pick.key
    print(f"\nsame pick: {'yes' if same else 'no'}; racing's pick's test score inside the exhaustive pick's 95% CI: "
          f"{'yes' if within else 'no'}; paired test p = {p:.3f} on {len(test)} test rows")
    print(f"goal (<= 30% of exhaustive calls, same pick within CI): "
          f"{'met' if racing_meter.used <= 0.3 * exhaustive_meter.used and within else 'not met'}")


if __name__ == "__main__":
    main()
