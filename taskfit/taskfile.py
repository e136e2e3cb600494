"""The task file: the user's program, in YAML, validated with pydantic at load.

Every key is documented in docs/taskfile.md; the ``description`` of each field below is the same text.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from taskfit.costs import CostsConfig
from taskfit.curve import CurveSpec
from taskfit.distill.spec import DistillSpec
from taskfit.errors import TaskfitError
from taskfit.serve.config import ServeConfig
from taskfit.tuning.spec import TuneSpec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SplitRatios(_Strict):
    train: float = Field(0.0, ge=0, le=1, description="Fraction of rows for the train split (demos, tuning).")
    dev: float = Field(0.0, ge=0, le=1, description="Fraction of rows for the dev split (optimization).")
    test: float = Field(1.0, ge=0, le=1, description="Fraction of rows for the held-out test split.")

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitRatios:
        if abs(self.train + self.dev + self.test - 1.0) > 1e-6:
            raise ValueError(f"split ratios must sum to 1 (got {self.train + self.dev + self.test:g})")
        return self


class DataConfig(_Strict):
    train: str | None = Field(None, description="Train file (JSONL or CSV), relative to the task file.")
    dev: str | None = Field(None, description="Dev file (JSONL or CSV).")
    test: str | None = Field(None, description="Test file (JSONL or CSV).")
    unlabeled: str | None = Field(None, description="Inputs without answers (JSONL or CSV), for a teacher to label "
                                  "(see `distill`); the output field may be absent.")
    file: str | None = Field(None, description="One file to split by `split` ratios instead of train/dev/test.")
    split: SplitRatios | None = Field(None, description="Ratios used with `file`.")
    seed: int = Field(0, description="Seed for the split shuffle and every random choice.")
    id_field: str = Field("id", description="Field holding a row id; the line number is used when absent.")
    shuffle: bool = Field(False, description="Shuffle the rows of each train/dev/test file once, with `seed`, so "
                          "that `limit: N` takes a fair sample of a file sorted by label (`file` is always shuffled).")
    on_missing: Literal["error", "skip"] = Field(
        "error", description="A row whose output is null, NaN, empty or absent, or whose input field (or a field a "
        "template shows) is null, NaN or absent: `error` stops with its file, line and field; `skip` leaves it out and `validate`, `eval` and `run` "
        "print how many were left out.")

    @model_validator(mode="after")
    def _one_layout(self) -> DataConfig:
        if self.file and (self.train or self.dev or self.test):
            raise ValueError("give either `file` (+ `split`) or train/dev/test files, not both")
        if not self.file and not (self.train or self.dev or self.test):
            raise ValueError("no data: give `file` or at least one of train/dev/test")
        return self


MAX_TEMPLATE_CHARS = 1_000_000  # characters of one rendered template: about 250,000 tokens, past most context windows


class PromptConfig(_Strict):
    instruction: str = Field("", description="What to do, as one paragraph (Jinja2; fields of the row available).")
    input_template: str | None = Field(
        None, description="How one input row is shown (Jinja2 over the row's fields). "
        "Default: one `Field: value` line per input field.")
    answer_prefix: str = Field("", description="Text placed after the input, e.g. 'Answer:'.")
    system: str | None = Field(None, description="System message; the model's default when empty.")
    output_format: str | None = Field(
        None, description="How to answer. Default for a label set: 'Answer with exactly one of: ...'.")
    response_prefix: str = Field(
        "", description="Opening words of the model's reply (prefill), e.g. 'Sentiment:'; the answer continues it.")
    max_chars: int = Field(
        MAX_TEMPLATE_CHARS, ge=1, description="Most characters one rendered template (input, instruction, system, a "
        "strategy's template) may produce; a row past it is an error naming the template and the row.")


class MetricSpec(_Strict):
    name: str = Field(description="Registered metric name (see `taskfit metrics`).")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword options for the metric.")


class ParseConfig(_Strict):
    type: Literal["auto", "label", "regex", "json", "text"] = Field(
        "auto", description="How to read the answer from a generation. auto: `label` when the task has labels, "
        "else `text`.")
    pattern: str | None = Field(None, description="Regex for type=regex; group 1 (or the whole match) is the answer.")
    field: str | None = Field(None, description="For type=json: the key whose value is the answer.")
    final_line: bool = Field(False, description="Only look at the last non-empty line of the generation.")


class StrategySpec(BaseModel):
    """One strategy row: a registered name plus its options (extra keys go to the strategy)."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(description="Registered strategy name (see `taskfit strategies`).")
    id: str | None = Field(None, description="Row name on the leaderboard; default derived from name and options.")
    _parsed: Any = None  # (a private attribute) the strategy's Options, validated when the task was loaded

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def label(self) -> str:
        if self.id:
            return self.id
        opts = self.options
        if "selection" in opts:
            return f"{self.name}_{opts['selection']}"
        return self.name


class ModelSpec(BaseModel):
    """One model entry. The keys below belong to every entry; the others are the backend's own options,
    validated against the options model the backend declares when the task is prepared (see `models[]` options
    by backend in docs/taskfile.md)."""

    model_config = ConfigDict(extra="allow")
    backend: str = Field("hf", description="Backend name: hf (local transformers), openai (any compatible server), "
                         "tuned (a fine-tuned model: path tuned:<id>), scripted, or one a plugin registers.")
    name: str | None = Field(None, description="Row name on the leaderboard.")
    price_in_per_1m: float = Field(0.0, ge=0, description="Price in $ per million input tokens.")
    price_out_per_1m: float = Field(0.0, ge=0, description="Price in $ per million output tokens.")
    price_per_hour: float | None = Field(
        None, ge=0, description="$ per hour of the machine this model runs on; turns its measured model time "
        "into a per-query cost (default: the task's `costs.price_per_hour` for local models, none for APIs).")

    @property
    def options(self) -> dict[str, Any]:
        """The entry's backend options, as written (unchecked until the backend validates them)."""
        return dict(self.model_extra or {})

    def label(self) -> str:
        if self.name:
            return self.name
        from taskfit.backends import backend_options

        label = getattr(backend_options(self), "label", None)
        return label() if callable(label) else self.backend


class TaskConfig(_Strict):
    name: str = Field(description="Short task name: letters, digits, '.', '_' or '-' (it names report files).")
    description: str = Field("", description="What the task is, in a sentence or two (shown to optimizers).")
    data: DataConfig = Field(description="Where the rows are and how they split (see `data` below).")
    inputs: list[str] = Field(description="Fields shown to the model.", min_length=1)
    output: str = Field(description="Field holding the expected answer.")
    aliases: str | None = Field(None, description="Field holding a list of other accepted answers.")
    labels: list[str] | None = Field(None, description="Closed label set (classification).")
    label_aliases: dict[str, list[str]] = Field(
        default_factory=dict, description="Other spellings that map to a label, e.g. {positive: [pos, good]}.")
    metrics: list[MetricSpec] = Field(
        default_factory=lambda: [MetricSpec(name="exact_match")],
        description="Metrics; the first is the leaderboard score.")
    prompt: PromptConfig = Field(default_factory=PromptConfig, description="Prompt pieces shared by every strategy.")
    parse: ParseConfig = Field(default_factory=ParseConfig, description="How generated replies become answers.")
    strategies: list[StrategySpec] = Field(
        default_factory=lambda: [StrategySpec(name="zero_shot")], description="Prompt strategies to compare.")
    models: list[ModelSpec] = Field(default_factory=lambda: [ModelSpec()], description="Models to compare.")
    output_mode: Literal["auto", "score", "generate"] = Field(
        "auto", description="auto: score label log-likelihoods when the task has labels and the backend can "
        "score; else generate and parse.")
    calibrate: bool = Field(
        False, description="Label scoring only: subtract each label's log-likelihood for a content-free input "
        "(every input field 'N/A'), which removes a model's bias towards one label (contextual calibration).")
    max_tokens: int = Field(32, ge=1, description="Generation length limit.")
    stop: list[str] = Field(default_factory=lambda: ["\n\n"], description="Stop sequences for generation.")
    split: Literal["train", "dev", "test"] = Field("test", description="Split the study is scored on.")
    limit: int | None = Field(None, ge=1, description="Score only the first N rows of the split.")
    tuning: list[TuneSpec] = Field(
        default_factory=list, description="Fine-tuning runs whose models join the study's leaderboard, e.g. "
        "`[{method: lora, objective: classify, model: minilm}]`; a method name alone means sft of the bundled "
        "model with that method. Trained once, then reused; see `taskfit tune`.")
    distill: list[DistillSpec] = Field(
        default_factory=list, description="Students trained on a teacher's answers, on the study's leaderboard next "
        "to their teacher, e.g. `[{teacher: structured@smollm2-135m, student: minilm+full}]`; see `taskfit distill`.")
    curve: list[CurveSpec] = Field(
        default_factory=list, description="Learning curves: a `tuning:` row also trained on nested subsets of the "
        "train split, each size a `<row>@N` row of the leaderboard, and the report states from how many labelled "
        "rows it matches the best prompt, e.g. `[{tuning: minilm+full, sizes: [50, 100, 200]}]`; see `taskfit curve`.")
    costs: CostsConfig = Field(default_factory=CostsConfig, description="Hourly machine prices for serving "
                               "and training, so the report can price every row at a query volume.")
    serve: ServeConfig = Field(default_factory=ServeConfig, description="How `taskfit serve` vets input and "
                               "output, keeps conversation memory and batches requests (see docs/serve.md).")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not _SAFE_NAME.fullmatch(v):
            raise ValueError(f"task name {v!r} must be 1-100 letters, digits, '.', '_' or '-', starting with a "
                             "letter or digit (it names files, e.g. the report)")
        return v

    @field_validator("metrics", mode="before")
    @classmethod
    def _metric_shorthand(cls, v: Any) -> Any:
        return [_shorthand(m) for m in (v if isinstance(v, list) else [v])]

    @field_validator("strategies", mode="before")
    @classmethod
    def _strategy_shorthand(cls, v: Any) -> Any:
        out = []
        for s in v if isinstance(v, list) else [v]:
            if isinstance(s, str):
                s = strategy_shorthand(s)
            elif isinstance(s, dict) and "name" not in s and len(s) == 1:
                (name, opts), = s.items()
                s = {"name": name, **(opts or {})}
            out.append(s)
        return out

    @field_validator("tuning", mode="before")
    @classmethod
    def _tuning_shorthand(cls, v: Any) -> Any:
        return [{"method": t} if isinstance(t, str) else t for t in (v if isinstance(v, list) else [v])]

    @field_validator("curve")
    @classmethod
    def _curve_of_a_tuning_row(cls, v: list[CurveSpec], info: Any) -> list[CurveSpec]:
        names = [t.label() for t in info.data.get("tuning", [])]
        for entry in v:
            if entry.tuning not in names:
                raise ValueError(f"tuning {entry.tuning!r} is not a row of `tuning:` "
                                 f"({', '.join(names) or 'none'})")
        return v

    @field_validator("models", mode="before")
    @classmethod
    def _model_shorthand(cls, v: Any) -> Any:
        out = []
        for m in v if isinstance(v, list) else [v]:
            if isinstance(m, str):
                m = {"backend": "tuned" if m.startswith("tuned:") else "hf", "path": m}
            out.append(m)
        return out

    @model_validator(mode="after")
    def _inputs_not_output(self) -> TaskConfig:
        if self.output in self.inputs:
            raise ValueError(f"output field {self.output!r} is also listed in inputs")
        return self


def strategy_shorthand(text: str) -> dict[str, Any]:
    """A strategy written as a string: ``zero_shot``, or ``optimized:<run-id>`` (a saved result, by run id)."""
    name, sep, ref = text.partition(":")
    if sep and ref:
        return {"name": name, "run": ref, "id": text}
    return {"name": text}


def _shorthand(m: Any) -> Any:
    if isinstance(m, str):
        return {"name": m}
    if isinstance(m, dict) and "name" not in m and len(m) == 1:
        (name, opts), = m.items()
        return {"name": name, "options": opts or {}}
    if isinstance(m, dict) and "name" in m and "options" not in m:
        return {"name": m["name"], "options": {k: v for k, v in m.items() if k != "name"}}
    return m


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
MAX_YAML_VALUES = 100_000  # after aliases are expanded; a task file has hundreds

# Task-file keys left out of a run's identity (``config_hash``): none changes what a model is asked or how its
# answer is scored. Prices and serving settings change no prediction; each strategy and model row, tuned model,
# distilled student and curve point has an identity of its own (a run key holds its own strategy and model
# entry, and the split and limit it ran with), so adding or editing one row leaves the other rows' runs as
# they were. Comments, formatting and key order never reach the validated configuration. (docs/taskfile.md,
# "Run identity", lists the same keys.)
NOT_IDENTITY = frozenset({"costs", "serve", "strategies", "models", "tuning", "distill", "curve", "split", "limit"})


def identity_hash(config: TaskConfig, extra: Any = None) -> str:
    """The task's part of a run's identity: a hash of the validated configuration less ``NOT_IDENTITY``
    (``extra``: what else decides predictions, e.g. the source of a Python metric)."""
    payload = {"config": config.model_dump(mode="json", exclude=set(NOT_IDENTITY)), "extra": extra}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Task:
    """A loaded task file: the validated config plus where it lives."""

    def __init__(self, config: TaskConfig, path: Path, text: str, identity_extra: Any = None):
        self.config = config
        self.path = path
        self.root = path.parent
        self.config_hash = identity_hash(config, identity_extra)  # what the task contributes to a run's identity
        # the identity runs stored before it was ``config_hash`` (the file's text): still found, then re-keyed
        self.legacy_hash = hashlib.sha256(text.encode()).hexdigest()[:16]
        self.metric_objects: dict[str, Any] = {}  # metrics given as Python objects (Task.from_rows)
        self.rows: dict[str, list[dict[str, Any]]] | None = None  # rows in memory by split; None: data files
        self.yaml_root: yaml.Node | None = None  # the file's node tree, for the line of a key in an error

    def line_of(self, *loc: Any) -> int | None:
        """The line in the task file of the value at ``loc`` (keys and list indexes), when known."""
        return _line_of(self.yaml_root, loc)

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]], **fields: Any) -> Task:
        """A task from rows in memory, no file (see ``taskfit.api.task_from_rows`` for the arguments)."""
        from taskfit.api import task_from_rows  # the schema module imports no feature package at load

        return task_from_rows(rows, **fields)

    def resolve(self, rel: str) -> Path:
        p = Path(rel)
        return p if p.is_absolute() else self.root / p


def load_task(path: str | Path) -> Task:
    """Read and validate a task file. Raises TaskfitError naming the file and the bad key."""
    path = Path(path)
    if not path.exists():
        raise TaskfitError("task file not found", file=str(path))
    text = path.read_text()
    try:
        raw, root = _parse_yaml(text, path)
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        raise TaskfitError(f"invalid YAML: {e}", file=str(path), line=line + 1 if line is not None else None) from e
    except RecursionError:
        raise TaskfitError("invalid YAML: nested too deeply", file=str(path)) from None
    if not isinstance(raw, dict):
        raise TaskfitError("a task file must be a YAML mapping", file=str(path))
    try:
        config = TaskConfig.model_validate(raw)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            lines.append(f"  {loc}: {err['msg']}")
        raise TaskfitError("invalid task file:\n" + "\n".join(lines), file=str(path),
                           line=_line_of(root, e.errors()[0]["loc"])) from None
    _check_urls(raw, root, path)
    task = Task(config, path, text)
    task.yaml_root = root
    # the registries are consulted here, when a task is prepared, not when this module is imported
    from taskfit.plugins import check_task

    check_task(task, root)
    return task


def _parse_yaml(text: str, path: Path) -> tuple[Any, yaml.Node | None]:
    """The document and its node tree. Aliases may repeat a part of the file, but a file whose aliases
    expand to more than MAX_YAML_VALUES values (an alias bomb) or refer to themselves is refused."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        _check_expansion(root, path)
        return loader.construct_document(root), root
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """Count the values the document holds once every alias is expanded, without expanding any."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the current node's ancestors: meeting one again is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > MAX_YAML_VALUES:
                raise TaskfitError(f"YAML aliases (*name) expand this value to more than {MAX_YAML_VALUES:,} "
                                   "values; write it out or shorten it", file=str(path),
                                   line=node.start_mark.line + 1)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise TaskfitError("a YAML alias (*name) refers to a value that contains it", file=str(path),
                               line=node.start_mark.line + 1)
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


def _line_of(root: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the value at ``loc`` (keys and list indexes), or of its deepest ancestor found."""
    node, line = root, None
    for part in loc:
        if node is None:
            break
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == str(part)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            node = None
    return node.start_mark.line + 1 if node is not None else line


def _check_urls(raw: Any, root: yaml.Node | None, path: Path, loc: tuple[Any, ...] = ()) -> None:
    """Refuse credentials in any ``base_url`` (model entries, a judge's model, ...): they would be stored with
    every run; keys come from environment variables."""
    from taskfit.credentials import url_problem

    items = raw.items() if isinstance(raw, dict) else enumerate(raw) if isinstance(raw, list) else ()
    for k, v in items:
        # one URL, or a list of replicas (an openai model's base_url): each one is checked
        urls = [((*loc, k), v)] if isinstance(v, str) else [((*loc, k, i), u) for i, u in enumerate(v)
                                                            if isinstance(u, str)] if isinstance(v, list) else []
        for at, url in urls if k == "base_url" else ():
            if problem := url_problem(url):
                where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in at).lstrip(".")
                raise TaskfitError(f"{where} {problem}", file=str(path), line=_line_of(root, at), field=where)
        _check_urls(v, root, path, (*loc, k))
