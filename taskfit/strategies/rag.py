"""rag: retrieve the k most relevant passages from a document collection and answer from them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

from taskfit.answering import answer
from taskfit.dataset import Example
from taskfit.errors import TaskfitError
from taskfit.lm import LM
from taskfit.prompts import messages, render_input, render_row, user_turn
from taskfit.strategies import Prediction, StrategyContext
from taskfit.strategies.options import parse_options
from taskfit.taskfile import StrategySpec

if TYPE_CHECKING:  # bm25s and scipy load when the row is built, not when a task file is checked
    from taskfit.retrieval import Document

DESCRIPTION = ("Retrieval-augmented: the k passages of a document collection most relevant to the input "
               "(BM25, MiniLM or hybrid) are shown as numbered context before it; records recall@k with gold_field.")

DEFAULT_INSTRUCTION = ("Answer the question using only the context below. If the context does not contain the "
                       "answer, reply exactly: I don't know.")


class RagOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    docs: str = Field(description="Document collection (JSONL or CSV), relative to the task file.")
    k: int = Field(3, ge=1, description="Passages shown per question.")
    retriever: Literal["hybrid", "bm25", "dense"] = Field(
        "hybrid", description="bm25: word overlap; dense: MiniLM cosine similarity; hybrid: both, fused.")
    alpha: float = Field(0.5, ge=0, le=1, description="hybrid: weight of the dense score (1 - alpha goes to BM25).")
    query_template: str | None = Field(
        None, description="Search query (Jinja2 over the row's fields). Default: the rendered input.")
    gold_field: str | None = Field(
        None, description="Row field with the gold document id (or a list of ids); enables recall@k.")
    id_field: str = Field("doc_id", description="Document field holding its id.")
    text_field: str = Field("text", description="Document field holding its text.")
    title_field: str = Field("title", description="Document field holding its title (optional in the file).")
    instruction: str = Field(DEFAULT_INSTRUCTION, description="Shown before the context (Jinja2; empty to omit).")
    system: str | None = Field(None, description="Overrides prompt.system for this row.")


class Rag:
    def __init__(self, options: RagOptions, ctx: StrategyContext):
        from taskfit.retrieval import Retriever

        self.options, self.ctx = options, ctx
        self.retriever = Retriever.from_file(ctx.task.resolve(options.docs), options.retriever, options.alpha,
                                             id_field=options.id_field, text_field=options.text_field,
                                             title_field=options.title_field)
        self._ids = {d.id for d in self.retriever.documents}

    def query(self, ex: Example) -> str:
        o = self.options
        if o.query_template:
            return render_row(self.ctx.parts, o.query_template, ex, "rag.query_template")
        return render_input(self.ctx.parts, ex)

    def prompt(self, ex: Example, passages: list[Document]) -> tuple:
        parts, o = self.ctx.parts, self.options
        system = o.system or parts.system
        context = "\n".join(f"[{i}] {d.passage()}" for i, d in enumerate(passages, start=1))
        instruction = render_row(parts, o.instruction, ex, "rag.instruction") if o.instruction else ""
        # the task's own instruction stays with the input: it says what form the answer takes, which the
        # rag instruction (where the facts come from) does not
        body = "\n\n".join(x for x in [instruction, "Context:\n" + context, user_turn(parts, ex)] if x)
        return messages(system and render_row(parts, system, ex, "prompt.system"), [("user", body)], parts.response_prefix)

    def predict(self, examples: list[Example], lm: LM) -> list[Prediction]:
        from taskfit.retrieval import recall_at_k

        hits = self.retriever.search([self.query(ex) for ex in examples], self.options.k)
        passages = {ex.id: [d for d, _ in h] for ex, h in zip(examples, hits, strict=True)}
        preds = answer(examples, lambda ex: self.prompt(ex, passages[ex.id]), lm, self.ctx)
        for ex, p in zip(examples, preds, strict=True):
            ids = [d.id for d in passages[ex.id]]
            p.details["retrieved"] = ids
            gold = self.gold_ids(ex)
            if gold:
                p.details["metrics"] = {f"recall@{self.options.k}": recall_at_k(ids, gold)}
        return preds

    def gold_ids(self, ex: Example) -> list[str]:
        """The example's gold document ids; empty when it has none (no recall is recorded for it)."""
        name = self.options.gold_field
        if name is None:
            return []
        if name not in ex.fields:
            raise TaskfitError(f"rag: gold_field {name!r} is not a field of example {ex.id!r}", field=name,
                               **_where(ex))
        value = ex.fields[name]
        gold = [str(v) for v in value] if isinstance(value, list) else ([] if value in (None, "") else [str(value)])
        unknown = [g for g in gold if g not in self._ids]
        if unknown:
            # a gold id the collection lacks would silently read as a retrieval miss
            raise TaskfitError(f"rag: gold document id(s) {', '.join(map(repr, unknown))} of example {ex.id!r} "
                               f"are not in {self.options.docs}", field=name, **_where(ex))
        return gold


def _where(ex: Example) -> dict:
    file, _, line = ex.source.rpartition(":")
    return {"file": file, "line": int(line)} if line.isdigit() else {}


Options = RagOptions  # the keys a `strategies:` row may set, checked when the task is loaded


def create(spec: StrategySpec, ctx: StrategyContext) -> Rag:
    return Rag(parse_options(RagOptions, spec), ctx)
