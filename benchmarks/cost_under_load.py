"""Do costs and the pick stay put when rows are evaluated on a busy machine? examples/sst2, three prompt rows.

Evaluates zero_shot, structured and few_shot_balanced on the bundled model (``--limit`` test rows) twice, each
time in a fresh workspace: once as the machine is, once with ``--busy`` competing CPU-bound processes
(multiprocessing busy loops) running. Each workspace calibrates the model's unit costs itself, so the loaded
pass calibrates under load too. Prints, for each pass, the wall time, the unit costs, the leaderboard's
measured time per 1k queries beside the work-based one, the cost table at ``--volume`` and the pick; then the
loaded runs repriced with the quiet pass's calibration (what a workspace that calibrated earlier would show).

    .venv/bin/python benchmarks/cost_under_load.py --limit 40
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ["zero_shot", "structured", "few_shot_balanced"]


def busy_loop() -> None:
    while True:
        pass


def evaluate(task: str, home: Path, limit: int, volume: str):
    from taskfit.costs import parse_volume
    from taskfit.report.data import collect
    from taskfit.study import run_study
    from taskfit.workspace import Workspace

    ws = Workspace.open(home)
    t0 = time.perf_counter()
    run_study(task, workspace=ws, strategy_names=ROWS, limit=limit)
    wall = time.perf_counter() - t0
    runs = ws.runs.list(limit=100)
    return ws, runs, collect(ws, runs, volume=parse_volume(volume)), wall


def show(title: str, ws, data, wall: float | None) -> None:
    from taskfit import leaderboard
    from taskfit.commands.report import cost_table
    from taskfit.terminal import console

    out = console()
    out.print(f"\n== {title}" + (f": evaluated in {wall:.0f} s wall" if wall is not None else ""), highlight=False)
    model_id = data.rows[0] and ws.runs.get(data.rows[0].run_id).model_id
    for kind, c in ws.unit_costs.get(model_id, "cpu").items():
        out.print(f"unit cost {kind}: {c.seconds_per_token * 1e3:.4f} ms/token (spread {c.spread:.1%}, "
                  f"{c.threads} threads, {c.batch})", highlight=False)
    for r in data.rows:
        out.print(f"{r.name}: time per 1k q {leaderboard.time_cell(r)}", highlight=False)
    out.print(cost_table(data.recommendation))
    out.print(f"pick: {data.recommendation.row.name if data.recommendation.row else data.recommendation.choice}",
              highlight=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default=str(ROOT / "examples/sst2/task.yaml"))
    ap.add_argument("--limit", type=int, default=40, help="test rows per row")
    ap.add_argument("--busy", type=int, default=2, help="competing busy-loop processes in the loaded pass")
    ap.add_argument("--volume", default="1M")
    args = ap.parse_args()
    from sqlalchemy import text

    from taskfit.costs import parse_volume
    from taskfit.report.data import collect

    with tempfile.TemporaryDirectory() as tmp:
        quiet_ws, _, quiet, quiet_wall = evaluate(args.task, Path(tmp) / "quiet", args.limit, args.volume)
        show("as the machine is", quiet_ws, quiet, quiet_wall)
        hogs = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.busy)]
        for h in hogs:
            h.start()
        try:
            loaded_ws, loaded_runs, loaded, loaded_wall = evaluate(args.task, Path(tmp) / "loaded", args.limit,
                                                                   args.volume)
        finally:
            for h in hogs:
                h.terminate()
                h.join()
        show(f"with {args.busy} busy-loop processes", loaded_ws, loaded, loaded_wall)
        # the loaded runs priced with the quiet pass's calibration: a workspace calibrated on a quieter day
        with quiet_ws.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(text("SELECT * FROM unit_costs"))]
        with loaded_ws.engine.begin() as conn:
            conn.execute(text("DELETE FROM unit_costs"))
        if rows:
            from taskfit.db import upsert

            with loaded_ws.engine.begin() as conn:
                upsert(conn, "unit_costs", rows, ("model_id", "device", "threads", "kind"))
        repriced = collect(loaded_ws, loaded_runs, volume=parse_volume(args.volume))
        show("loaded runs, quiet calibration", loaded_ws, repriced, None)
        picks = [d.recommendation.row for d in (quiet, loaded, repriced)]
        names = [r.name if r else None for r in picks]
        print(f"\npicks: quiet {names[0]}; loaded {names[1]}; loaded with quiet calibration {names[2]}"
              f" ({'same' if len(set(names)) == 1 else 'different'})")


if __name__ == "__main__":
    main()
