"""The task file's `serve:` section: how `taskfit serve` vets, remembers and batches (no heavy imports here)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Personal-data patterns `redact:` may name. Deliberately simple and documented: they catch the common
# written forms (name@host.tld; international or North-American style phone numbers), not every variant.
# Each starts only where a run of its characters starts (the lookbehinds): without that, a long run with no
# match is rescanned from every position inside it, quadratic in its length (a 1 MB word took ~45 minutes).
REDACTIONS: dict[str, str] = {
    "email": r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}",
    "phone": r"(?<![\w+])(?:(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}"
             r"|\+?\d{10,13})(?![\w-])",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VettingRules(_Strict):
    max_chars: int | None = Field(None, ge=1, description="Refuse text longer than this many characters.")
    blocked: list[str] = Field(
        default_factory=list, description="Regular expressions (case-insensitive); text matching one is refused.")
    redact: list[str] = Field(
        default_factory=lambda: ["email", "phone"],
        description=f"Built-in personal-data patterns to replace with [EMAIL], [PHONE]...: {', '.join(REDACTIONS)}.")
    patterns: dict[str, str] = Field(
        default_factory=dict, description="More redactions: NAME -> regex; matches become [NAME].")

    @field_validator("redact")
    @classmethod
    def _known_redactions(cls, v: list[str]) -> list[str]:
        unknown = [name for name in v if name not in REDACTIONS]
        if unknown:
            raise ValueError(f"unknown redaction {unknown}; known: {', '.join(REDACTIONS)} (add others under patterns)")
        return v


class VettingConfig(_Strict):
    input: VettingRules = Field(default_factory=VettingRules,
                                description="Rules for user text, applied before it reaches the model or the log.")
    output: VettingRules = Field(default_factory=VettingRules,
                                 description="Rules for the model's reply, applied before it reaches the client.")
    refusal: str = Field("I can't help with that.", description="Reply sent when the model's output is refused "
                         "(finish_reason content_filter).")


class MemoryConfig(_Strict):
    enabled: bool = Field(True, description="Store turns by conversation id so follow-ups see earlier turns.")
    max_turns: int = Field(8, ge=0, description="Keep at most this many earlier turns (a user message + reply).")
    max_tokens: int = Field(1024, ge=0, description="And at most this many tokens of them (estimated as chars / 4), "
                            "dropping the oldest first.")


class RetentionConfig(_Strict):
    conversation_days: float = Field(7.0, gt=0, description="Delete a conversation once it has had no new turn "
                                     "for this many days.")
    conversation_messages: int = Field(100_000, ge=1, description="Keep at most this many stored messages over "
                                       "all conversations; the oldest go first.")
    request_log_days: float = Field(30.0, gt=0, description="Delete this task's request-log rows older than this.")
    request_log_rows: int = Field(100_000, ge=1, description="Keep at most this many request-log rows of this task.")
    cache_days: float = Field(30.0, gt=0, description="Delete call-cache entries of the served model older than "
                              "this (an evaluation of the same model calls it again for them).")
    cache_entries: int = Field(100_000, ge=1, description="Keep at most this many call-cache entries of the "
                               "served model.")
    every_s: float = Field(300.0, gt=0, description="How often the server prunes (and once when it starts).")


class ServeConfig(_Strict):
    model_name: str | None = Field(None, description="Model id clients send and /v1/models lists (default: the "
                                   "task name).")
    reply: Literal["answer", "output"] = Field(
        "answer", description="answer: the parsed answer (a label, the extracted value); output: the model's text.")
    vetting: VettingConfig = Field(default_factory=VettingConfig, description="Input and output checks.")
    memory: MemoryConfig = Field(default_factory=MemoryConfig, description="Conversation memory.")
    cache: bool = Field(True, description="Answer repeated identical model calls from the call cache.")
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Larger request bodies get 413.")
    body_timeout_s: float = Field(30.0, gt=0, description="A request body not fully received within this many "
                                  "seconds gets 408 (a slow or stalled client must not hold a connection).")
    header_timeout_s: float = Field(10.0, gt=0, description="A connection whose request headers are not complete "
                                    "within this many seconds (of opening, or of the previous reply) gets 408 and "
                                    "is closed.")
    max_batch: int = Field(32, ge=1, description="Local models: most model requests merged into one batch.")
    batch_window_ms: float = Field(5.0, ge=0, description="Local models: how long an idle model waits for more "
                                   "requests to batch with the first.")
    max_concurrent: int = Field(64, ge=1, description="Requests processed at once (remote backends keep their "
                                "own models[].concurrency bound); more wait in line.")
    max_tool_steps: int = Field(5, ge=1, description="Requests with `tools`: model calls per request before it "
                                "must answer.")
    log_content: bool = Field(True, description="Keep the (redacted) user text and reply in the request log.")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="How long conversations, "
                                       "the request log and the served model's call-cache entries are kept.")
