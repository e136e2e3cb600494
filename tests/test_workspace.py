"""Workspaces: each owns its database, so two in one process share no runs, cached calls or tuned models."""

import pytest

from taskfit.backends.scripted import ScriptedBackend
from taskfit.errors import TaskfitError
from taskfit.leaderboard import rows
from taskfit.runner import BackendPool, evaluate
from taskfit.study import prepare, select_arms
from taskfit.workspace import Workspace


class FixedPool(BackendPool):
    """Every model is one scripted backend whose model id does not depend on its script: a call cache shared
    between workspaces would answer the second workspace with the first one's replies."""

    def __init__(self, workspace, label: str):
        super().__init__(workspace)
        self.backend = ScriptedBackend({"scores": {"": {label: -0.1}}})
        self.backend.model_id = "scripted:same-model"

    def get(self, spec):
        return self.backend


def _tune_fields(task) -> dict:
    return {"key": "k", "task_name": task.config.name, "task_path": str(task.path), "method": "lora",
            "objective": "sft", "base_model": "bundled", "data_hash": "d", "seed": 0, "spec": {}, "versions": {}}


def test_two_workspaces_in_one_process_share_nothing(make_task, tmp_path):
    task, ds = prepare(make_task(strategies=["zero_shot"]))
    arms = select_arms(task, None, None)
    a, b = Workspace.open(tmp_path / "a"), Workspace.open(tmp_path / "b")
    try:
        (run_a,) = evaluate(task, ds, arms, split="test", limit=None, workspace=a, pool=FixedPool(a, "positive"))
        (run_b,) = evaluate(task, ds, arms, split="test", limit=None, workspace=b, pool=FixedPool(b, "negative"))

        # runs: each workspace holds its own run, finished from scratch (no resume across workspaces)
        assert [r.id for r in a.runs.list()] == [run_a.id] and [r.id for r in b.runs.list()] == [run_b.id]
        assert a.runs.get(run_b.id) is None and b.runs.get(run_a.id) is None
        # cache: the same requests to the same model id, answered by each workspace's own model
        assert {p.answer for p in a.runs.predictions(run_a.id)} == {"positive"}
        assert {p.answer for p in b.runs.predictions(run_b.id)} == {"negative"}
        assert all(p.cache_hits == 0 for p in b.runs.predictions(run_b.id))
        assert a.cache.count() == b.cache.count() > 0
        assert rows(a, [run_a])[0].run_id == run_a.id and rows(b, [run_b])[0].run_id == run_b.id

        # tuned models and optimizations: recorded in one workspace, unknown in the other
        tuned = a.tunes.create(**_tune_fields(task))
        assert tuned.folder.parent == a.root / "tuned"
        assert [t.id for t in a.tunes.list()] == [tuned.id] and b.tunes.list() == []
        with pytest.raises(TaskfitError, match="no tuned model"):
            b.tunes.get(tuned.id)
        opt = a.optimizations.create(
            status="done", task_name=task.config.name, task_path=str(task.path), task_hash="h", data_hash="d",
            model="m", model_id="m", budget=1, calls=0, calls_sent=0,
            program={"base": "zero_shot", "instruction": "Say the label.", "demos": [], "options": {}},
            prompt="", candidates=[], report={}, config={}, versions={})
        (arm,) = select_arms(task, [f"optimized:{opt.id}"], None)
        (run,) = evaluate(task, ds, [arm], split="test", limit=2, workspace=a, pool=FixedPool(a, "positive"))
        assert run.status == "done"
        with pytest.raises(TaskfitError, match="no optimization run matches"):
            evaluate(task, ds, [arm], split="test", limit=2, workspace=b, pool=FixedPool(b, "negative"))
    finally:
        a.close()
        b.close()


def test_plugins_that_keep_state_need_a_workspace(make_task):
    from taskfit.backends import build_backend
    from taskfit.metrics import build_metric
    from taskfit.taskfile import ModelSpec

    with pytest.raises(TaskfitError, match="metric 'human'.*workspace"):
        build_metric("human", {})
    with pytest.raises(TaskfitError, match="tuned model is looked up in a workspace"):
        build_backend(ModelSpec(backend="tuned", path="tuned:abc"))
    judge = build_metric("judge", {"model": {"backend": "scripted", "script": {}}})
    with pytest.raises(TaskfitError, match="metric 'judge'.*workspace"):
        judge.judge.lm  # noqa: B018


def test_a_workspace_accepts_a_string_path(tmp_path):
    from taskfit.workspace import Workspace

    ws = Workspace(str(tmp_path / "ws"))
    assert ws.root == tmp_path / "ws"
    assert ws.runs is not None and (tmp_path / "ws" / "taskfit.db").exists()
