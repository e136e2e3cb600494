"""Stage times of a study: measured around each stage, printed at the end of `taskfit run`."""

import time

from taskfit.stages import Stages, duration


def test_stages_measure_wall_and_cpu_time_and_add_up_repeated_stages():
    stages = Stages()
    with stages("sleep"):
        time.sleep(0.6)  # waiting: wall time passes, CPU time does not
    with stages("spin"):  # working: CPU time passes (however busy the machine is, up to 30 s of wall time)
        start, deadline = time.process_time(), time.perf_counter() + 30
        while time.process_time() - start < 0.7 and time.perf_counter() < deadline:
            pass
    with stages("sleep"):
        time.sleep(0.1)
    sleep, spin = stages.times[0], stages.times[1]
    assert sleep.wall_s >= 0.6 and sleep.cpu_s < 0.3
    assert spin.cpu_s >= 0.6
    assert stages.text().startswith("sleep 1 s (cpu 0 s), spin ")
    assert stages.text().count("sleep") == 1


def test_duration_reads_as_people_write_it():
    assert [duration(s) for s in (4.4, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]


def test_a_study_reports_its_stage_times(make_task, workspace):
    from taskfit import api

    path = make_task(strategies=["zero_shot"])
    board = api.evaluate(path, workspace=workspace, tuned=True, limit=4)
    assert [s.name for s in board.stages] == ["load", "tuning", "distillation", "learning curve", "evaluation"]
    assert all(s.wall_s >= 0 for s in board.stages)
