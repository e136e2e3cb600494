"""What a distillation is: a teacher, a student, which inputs the teacher labels and what it may spend.

A ``DistillSpec`` is one row of a task file's ``distill:`` list, or the options of ``taskfit distill``. It only
imports pydantic (and the tuning spec), so the task-file schema can use it without loading torch.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from taskfit.tuning.spec import TuneSpec


class SyntheticSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=1, description="How many new inputs the teacher writes (after deduplication, at most).")
    shown: int = Field(4, ge=1, description="Train inputs shown in each writing request, as examples of the style.")
    seed: int = Field(0, description="Seed for choosing the shown inputs and the sampling of the teacher.")
    max_tokens: int = Field(96, ge=8, description="Length limit of one written input.")


class DistillSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(description="`<strategy>@<model>`: a strategy row (or registered name, or "
                         "optimized:<run-id>) and a model row of the task file, e.g. `structured@smollm2-135m`.")
    student: str | TuneSpec = Field(description="The student: the name (or index) of a row of the task file's "
                                    "`tuning:` list, or a tuning spec written in place.")
    name: str | None = Field(None, description="Row name of the student on the leaderboard "
                             "(default `<student>~<teacher>`).")
    train_limit: int | None = Field(None, ge=1, description="Label only the first N train inputs.")
    unlabeled: bool = Field(True, description="Also label the rows of `data.unlabeled`, when the task has one.")
    unlabeled_limit: int | None = Field(None, ge=1, description="Label only the first N unlabeled rows.")
    synthetic: SyntheticSpec | None = Field(None, description="The teacher also writes new inputs in the style "
                                            "of the train inputs and labels them (deduplicated against train "
                                            "and test; test rows are never shown).")
    rationale: bool = Field(False, description="sft students of a reasoning teacher (cot, zero_shot_cot, "
                            "self_consistency) learn the teacher's whole reply (reasoning, then the answer).")
    per_step: bool = Field(False, description="A `chain` teacher: each step is distilled into its own student "
                           "(an sft student), and the chain runs with the students in place of the teacher.")
    gold: bool = Field(True, description="Also train the same student on the gold labels of the same train rows, "
                       "for comparison on the leaderboard.")
    budget_calls: int | None = Field(None, ge=1, description="Stop labelling before the teacher makes more than "
                                     "this many calls (cache hits count: the spend is the same on a rerun).")
    budget_dollars: float | None = Field(None, gt=0, description="Stop labelling before the teacher's token "
                                         "cost (the model's prices) passes this many dollars.")

    @field_validator("teacher")
    @classmethod
    def _teacher_form(cls, v: str) -> str:
        strategy, sep, model = v.rpartition("@")
        if not sep or not strategy or not model:
            raise ValueError(f"teacher {v!r}: write it as <strategy>@<model>, e.g. structured@smollm2-135m")
        return v

    @property
    def teacher_strategy(self) -> str:
        return self.teacher.rpartition("@")[0]

    @property
    def teacher_model(self) -> str:
        return self.teacher.rpartition("@")[2]
