"""`taskfit merge-stores`: bring the stores of separate jobs (shards of one study) into this workspace.

Named `merge-stores` because `taskfit merge` folds a LoRA adapter into its base model.
"""

from __future__ import annotations

from typing import Annotated

import typer

from taskfit.terminal import console

out = console()


def register(app: typer.Typer) -> None:
    """Add `merge-stores` to the `taskfit` app."""

    @app.command("merge-stores")
    def merge_stores(stores: Annotated[list[str] | None, typer.Argument(
            help="Stores to import: SQLite files, workspace folders (their taskfit.db) or database URLs; none: "
            "only combine the shard runs already here (jobs that shared one --db).")] = None) -> None:
        """Import runs, predictions, the call cache and tuned models from other stores into this workspace
        (identical rows are skipped; a conflicting one stops the merge before anything is written), then
        combine the shard runs (`--shard I/N`) of each configuration into its complete run."""
        from taskfit.commands import workspace
        from taskfit.store_merge import merge_stores as merge

        result = merge(workspace(), stores or [])
        for table, added in result.added.items():
            out.print(f"{table}: {added} added, {result.skipped[table]} already here", highlight=False)
        for run_id in result.combined:
            out.print(f"combined shards into run {run_id}", highlight=False)
        for note in result.notes:
            out.print(f"note: {note}", style="yellow", highlight=False)
