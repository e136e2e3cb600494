"""What a dry run knows of a model without loading it: its cache identity, how it counts prompt tokens, whether
it is remote and can score labels.

A backend module declares ``facts(spec, cache) -> ModelFacts`` next to its ``create``; a backend that declares
none (a third-party one, say) gets ``generic_facts``: no known identity (so no cached call is recognised),
prompt tokens counted as characters / CHARS_PER_TOKEN, local.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from taskfit.backends import Message, backends

CHARS_PER_TOKEN = 4  # token count for backends without a local tokenizer


def words(messages: Iterable[Message]) -> int:
    return len("\n".join(str(m.get("content") or "") for m in messages).split())


def chars(messages: Iterable[Message]) -> int:
    return max(1, len("".join(str(m.get("content") or "") for m in messages)) // CHARS_PER_TOKEN)


@dataclass
class ModelFacts:
    model_id: str | None  # the cache identity of the model, when it can be known without loading it
    count: Callable[[Iterable[Message]], int]  # prompt tokens of a chat
    remote: bool
    # label scoring; None: not known until the first call (a server whose scoring path is not probed yet)
    can_score: bool | None = True
    score_id: str | None = None  # the cache identity of its score calls, where it is not ``model_id``


def generic_facts(spec: Any, cache: Any) -> ModelFacts:
    return ModelFacts(None, chars, False)


def model_facts(spec: Any, cache: Any) -> ModelFacts:
    """The facts ``spec``'s backend declares (its ``facts`` hook), else the generic ones."""
    hook = backends.attribute(spec.backend, "facts") or generic_facts
    return hook(spec, cache)
