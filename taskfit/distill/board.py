"""A distilled student's place on the leaderboard: its teacher, what labelling cost, how often it agrees with
the teacher, whether it is worse than the teacher (paired test), and the same student trained on gold labels."""

from __future__ import annotations

import dataclasses
from typing import Any

from taskfit.stats import paired_p
from taskfit.types import LeaderboardRow
from taskfit.workspace import Workspace


def annotate(table_rows: list[LeaderboardRow], workspace: Workspace) -> list[LeaderboardRow]:
    """The rows, each distilled student's ``tune["distill"]`` completed from the other rows of the table.

    ``tune["distill"]``: teacher (``<strategy>@<model>``), teacher_row, labelling (calls, tokens_in, tokens_out,
    dollars, rows: the one-time cost of the labels), rows (train, unlabeled, synthetic), agreement (share of
    the scored rows on which the student's answer equals the teacher's), teacher_score, p_vs_teacher (McNemar
    or paired bootstrap), gold_row, gold_score, gold_ci, teacher_train_accuracy.
    """
    by_name = {r.name: r for r in table_rows}
    by_tune = {r.tune["id"]: r for r in table_rows if r.tune}
    answers: dict[str, dict[str, Any]] = {}

    def preds(run_id: str) -> dict[str, Any]:
        if run_id not in answers:
            answers[run_id] = {p.example_id: p for p in workspace.runs.predictions(run_id, with_trace=False)}
        return answers[run_id]

    out = []
    for r in table_rows:
        info = (r.tune or {}).get("distill")
        if not info:
            out.append(r)
            continue
        info = dict(info)
        teacher = by_name.get(info["teacher_row"])
        if teacher:
            mine, theirs = preds(r.run_id), preds(teacher.run_id)
            shared = [k for k in mine if k in theirs]
            info["agreement"] = (sum(mine[k].answer == theirs[k].answer for k in shared) / len(shared)
                                 if shared else None)
            info["teacher_score"] = teacher.score
            a, b = [theirs[k].score for k in shared], [mine[k].score for k in shared]
            info["p_vs_teacher"] = paired_p(a, b, all(x in (0.0, 1.0) for x in a + b)) if shared else None
        gold = by_tune.get(info.get("gold_tune") or "")
        if gold:
            info.update(gold_row=gold.model, gold_score=gold.score, gold_ci=[gold.ci_low, gold.ci_high])
        out.append(dataclasses.replace(r, tune={**r.tune, "distill": info}))
    return out


def render(table_rows: list[LeaderboardRow]):
    """A Rich table of the distilled students of a leaderboard (fits 120 columns), or None when it has none."""
    from rich import box
    from rich.table import Table

    students = [r for r in table_rows if (r.tune or {}).get("distill")]
    if not students:
        return None
    t = Table(title="Distilled students", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("student", "teacher", "score [95% CI]", "teacher score", "p vs teacher", "agreement", "labelling",
                "trained on gold"):
        t.add_column(col, justify="left" if col in ("student", "teacher", "labelling", "trained on gold")
                     else "right", overflow="fold")
    for r in students:
        d = r.tune["distill"]
        lab = d.get("labelling") or {}
        rows = d.get("rows") or {}
        p = d.get("p_vs_teacher")
        tokens = lab.get("tokens_in", 0) + lab.get("tokens_out", 0)
        dollars = lab.get("dollars") or 0
        t.add_row(
            r.model.split("~")[0], d["teacher"], f"{r.score:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}]",
            "" if d.get("teacher_score") is None else f"{d['teacher_score']:.3f}",
            "" if p is None else f"{p:.3f}" + (" *" if p < 0.05 else ""),
            "" if d.get("agreement") is None else f"{d['agreement']:.1%}",
            f"{lab.get('rows', 0):,} rows ({'+'.join(str(rows.get(k, 0)) for k in ('train', 'unlabeled', 'synthetic'))}"
            f"), {lab.get('calls', 0):,} calls, {tokens:,} tokens" + (f", ${dollars:.4f}" if dollars else ""),
            "" if d.get("gold_score") is None else f"{d['gold_row']}: {d['gold_score']:.3f}")
    t.caption = ("agreement: share of test rows where the student's answer equals the teacher's; p vs teacher: "
                 "McNemar or paired bootstrap, * < 0.05; labelling: rows (train+unlabeled+synthetic)")
    return t
