"""One shard of a split: the rows one of N independent jobs scores (``--shard I/N``), chosen by example id.

A row belongs to shard ``sha256(example id) mod N``: the same in every process and on every machine, and a
row keeps its shard when rows are added to the data. A shard's run has an identity of its own (the complete
run's key and the shard), so a shard is never mistaken for, or reused as, the complete run; ``taskfit
merge-stores`` combines the N shard runs of one configuration into the complete run.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from taskfit.errors import TaskfitError


@dataclass(frozen=True)
class Shard:
    index: int  # 0 .. count-1
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``I/N`` as given to ``--shard`` (0 <= I < N)."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise TaskfitError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/4 (SLURM: "
                               "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT)")
        return cls(int(m.group(1)), int(m.group(2)))

    def owns(self, example_id: str) -> bool:
        return shard_of(example_id, self.count) == self.index

    def key(self, complete_key: str) -> str:
        """The shard run's identity: the complete run's key and which shard of how many."""
        payload = json.dumps({"complete": complete_key, "shard": [self.index, self.count]})
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    def record(self, complete_key: str) -> dict[str, object]:
        """What a shard run keeps in its config (``config["shard"]``): enough to combine the shards later."""
        return {"index": self.index, "count": self.count, "complete_key": complete_key}

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(example_id: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(example_id.encode()).digest()[:8], "big") % count
