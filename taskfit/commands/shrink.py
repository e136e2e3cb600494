"""`taskfit shrink`: quantize a base or tuned model and put each precision on the leaderboard next to its
full-precision parent, with size on disk, peak memory and latency per query."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from taskfit.commands import workspace
from taskfit.terminal import console

out = console()
err = console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add `shrink` to the `taskfit` app."""

    @app.command()
    def shrink(
        task: Annotated[str, typer.Argument(help="Path to the task file (YAML) the models are scored on.")],
        model: Annotated[str, typer.Argument(help="bundled, a model folder, or tuned:<id> (an adapter is "
                                             "merged into its base first).")],
        to: Annotated[list[str], typer.Option("--to", help="Precision: int8, int4, or a GGUF file: "
                                              "gguf-f32, gguf-f16, gguf-q8_0 (repeat for several).")],
        strategy: Annotated[str | None, typer.Option(help="Strategy to score with (default: the task's first; "
                                                     "a tuned model's own).")] = None,
        limit: Annotated[int | None, typer.Option(help="Rows of the split to score (0: all).")] = None,
        queries: Annotated[int, typer.Option(help="Single queries timed for latency and memory.")] = 8,
        as_json: Annotated[bool, typer.Option("--json", help="Print the leaderboard rows as JSON.")] = False,
        wide: Annotated[bool, typer.Option("--wide", help="One leaderboard table with every column (wider than "
                                           "120).")] = False,
    ) -> None:
        """Quantize MODEL to each --to precision; score the parent and each result; put accuracy with CI, size
        on disk, peak memory and latency per query on one leaderboard."""
        from transformers import AutoTokenizer

        from taskfit.backends.hf import prompt_text
        from taskfit.leaderboard import render, rows, verdict
        from taskfit.prompts import prompt_parts
        from taskfit.runner import Arm, evaluate
        from taskfit.shrink import against_parent, footprint, quantize
        from taskfit.strategies import StrategyContext, strategies
        from taskfit.study import prepare
        from taskfit.taskfile import ModelSpec, StrategySpec
        from taskfit.tuning.models import base_folder

        ws = workspace()
        task_obj, dataset = prepare(task)
        c = task_obj.config
        row = next((s for s in c.strategies if s.label() == strategy), None) or (
            StrategySpec(name=strategy) if strategy else (c.strategies[0] if c.strategies else StrategySpec()))
        if model.startswith("tuned:"):
            from taskfit.tuning.adapters import merge
            from taskfit.tuning.spec import TuneSpec
            from taskfit.tuning.tune import Job

            rec = ws.tunes.get(model.removeprefix("tuned:"))
            parent = merge(rec.id, str(ws.root / "merged" / rec.id), store=ws.tunes)
            if strategy is None:
                row = Job.strategy_for(task_obj, TuneSpec(**{**rec.spec, "objective": "sft"}))
            name = TuneSpec(**rec.spec).label()
        else:
            parent = base_folder(model, task_obj.root)
            name = ModelSpec(path=model).label()
        folders = {name: parent}
        for precision in to:
            err.print(f"quantizing {name} to {precision}", style="dim")
            target = ws.root / "shrunk" / f"{name}-{precision}"
            if precision.startswith("gguf-"):  # one GGUF file for llama.cpp/Ollama, scored here converted back
                from taskfit.gguf_export import shrink_to_gguf, tuned_base

                base = tuned_base(ws, rec.id) if model.startswith("tuned:") else parent
                folders[f"{name}-{precision}"] = shrink_to_gguf(parent, precision, target, base=base)
            else:
                folders[f"{name}-{precision}"] = quantize(parent, precision, target)
        chat = not (c.models and c.models[0].backend == "hf"
                    and not c.models[0].options.get("chat_template", True))
        arms = [Arm(row, ModelSpec(backend="hf", path=str(f), name=n, chat_template=chat)) for n, f in folders.items()]
        limit = c.limit if limit is None else (limit or None)
        records = evaluate(task_obj, dataset, arms, split=c.split, limit=limit, workspace=ws)

        # the footprint is kept with each run: the leaderboard, --json and the report show it
        ctx = StrategyContext(task=task_obj, parts=prompt_parts(task_obj), train=dataset.split("train"),
                              mode="score", seed=c.data.seed)
        built = strategies.get(row.name)(row, ctx)
        tok = AutoTokenizer.from_pretrained(parent)
        examples = dataset.split(c.split)[:queries]
        prompts = [prompt_text(tok, built.prompt(ex), chat and bool(tok.chat_template)) for ex in examples]
        for record, folder in zip(records, folders.values(), strict=True):
            err.print(f"measuring {record.model} (fresh process, {len(prompts)} single queries)", style="dim")
            ws.runs.set_footprint(record.id, footprint(folder, prompts))
        board = rows(ws, records)
        if as_json:
            print(json.dumps([r.to_json() for r in board], indent=2))
            return
        # piped output: as wide as `taskfit eval` prints its leaderboard (a Console caps print widths at its own)
        printer = out if out.is_terminal else console(width=300 if wide else 120)
        printer.print(render(board, title=f"{name} and its shrunk copies", wide=wide))
        printer.print(verdict(board), highlight=False)
        for model_name, change, p in against_parent(ws, records[0], records[1:]):
            test = "no shared examples" if p is None else f"p = {p:.3f}" + (" *" if p < 0.05 else "")
            printer.print(f"{model_name}: {change:+.3f} against {name} ({test})", highlight=False)
