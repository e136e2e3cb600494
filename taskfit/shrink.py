"""Shrinking a model for serving: weight-only quantization on CPU with torchao, saved as a model folder the
``hf`` backend loads like any other, and the measurements that decide whether it is worth it (size on disk,
peak memory, latency per query; accuracy comes from the leaderboard).

``int8``: one byte per weight, a scale per output channel. ``int4``: 4-bit values in groups of 32 with a
scale each; torchao's CPU layout keeps each value in a byte (``IntxUnpackedToInt8Tensor``), so int4 saves no
disk or memory over int8 here, only accuracy is at stake; packed int4 kernels need CUDA (``mslk``).
Embeddings and the output head stay in full precision (tied in small models; quantizing them costs the most
accuracy per byte saved).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from taskfit.errors import TaskfitError
from taskfit.types import Footprint

if TYPE_CHECKING:
    from taskfit.store import RunRecord
    from taskfit.workspace import Workspace

PRECISIONS = ("int8", "int4")
# bytes per parameter when serving; weights only (add the KV cache and activations for long contexts)
SERVING_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0, "int8": 1.0, "int4": 0.5}


def _config(precision: str):
    from torchao.quantization import Int8WeightOnlyConfig, IntxWeightOnlyConfig
    from torchao.quantization.granularity import PerGroup

    if precision == "int8":
        return Int8WeightOnlyConfig()
    if precision == "int4":
        return IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32))
    raise TaskfitError(f"--to {precision!r}: choose one of {', '.join(PRECISIONS)}", field="to")


def quantize(source: Path, precision: str, out: Path) -> Path:
    """Quantize the causal LM in ``source`` to ``precision`` and save it (weights, config, tokenizer) in
    ``out``; an existing result is reused."""
    try:
        import torchao  # noqa: F401
    except ImportError as e:
        raise TaskfitError("shrinking needs torchao: pip install 'taskfit[shrink]'") from e
    from transformers import AutoModelForCausalLM, AutoTokenizer, TorchAoConfig
    from transformers.utils import logging as hf_logging

    config = _config(precision)
    if (out / "shrink.json").is_file():
        return out
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=torch.float32, quantization_config=TorchAoConfig(config, modules_to_not_convert=["lm_head"]))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out)
    (out / "shrink.json").write_text(json.dumps({"parent": str(source), "precision": precision}, indent=2))
    return out


def size_mb(folder: Path) -> float:
    """Weights on disk (safetensors, bin, gguf files) in MB."""
    exts = {".safetensors", ".bin", ".gguf", ".pt"}
    return sum(f.stat().st_size for f in folder.rglob("*") if f.suffix in exts) / 2**20


def precision_of(folder: Path) -> str:
    """The precision of the weights in ``folder``: a shrunk copy's, else float32 (what the parent is loaded
    in to be quantized and measured)."""
    marker = folder / "shrink.json"
    return json.loads(marker.read_text())["precision"] if marker.is_file() else "float32"


def footprint(folder: Path, prompts: list[str], timeout_s: float = 600) -> Footprint:
    """Load the model in ``folder`` in a fresh process and time single-query forward passes; the process's
    peak resident memory is the serving memory (a shared process would mix other models' memory in)."""
    import subprocess

    res = subprocess.run([sys.executable, "-m", "taskfit.shrink", str(folder)], input=json.dumps(prompts),
                         capture_output=True, text=True, timeout=timeout_s)
    if res.returncode != 0:
        raise TaskfitError(f"measuring {folder} failed: {res.stderr.strip()[-500:]}")
    measured = json.loads(res.stdout.strip().splitlines()[-1])
    return Footprint(precision=precision_of(folder), size_mb=size_mb(folder), queries=len(prompts), **measured)


def _measure(folder: Path, prompts: list[str]) -> dict[str, float]:
    """Load time, peak memory and mean time per query of this process (``footprint``'s measuring end)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from taskfit import bundled

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    folder = bundled.model_folder(folder)  # a GGUF copy is served converted, as the hf backend loads it
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    load_s = time.perf_counter() - start
    times = []
    with torch.inference_mode():
        for i, p in enumerate([prompts[0], *prompts]):
            ids = tok(p, return_tensors="pt")
            t = time.perf_counter()
            model(**ids)
            if i:  # the first pass warms up allocations
                times.append(time.perf_counter() - t)
    return {"load_s": load_s, "peak_mb": _peak_rss_mb(), "ms_per_query": 1000 * sum(times) / len(times)}


def _peak_rss_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM belongs to the address space exec created;
    ``ru_maxrss`` would carry over the peak of the (large) parent this process was forked from."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)


def against_parent(workspace: Workspace, parent: RunRecord, copies: list[RunRecord]
                   ) -> list[tuple[str, float, float | None]]:
    """Each shrunk copy's score minus its parent's on the same examples, with the paired test's p-value
    (McNemar or paired bootstrap, as on the leaderboard): (model, change, p) per copy; p is None when the
    two runs share no example."""
    from taskfit.leaderboard import rows

    out = []
    for copy in copies:
        pair = {r.run_id: r for r in rows(workspace, [parent, copy])}
        p = next((r.p_vs_best for r in pair.values() if r.p_vs_best is not None), None)
        out.append((copy.model, pair[copy.id].score - pair[parent.id].score, p))
    return out


def serving_table(params: float) -> list[dict[str, float | str]]:
    """Memory for the weights of a ``params``-parameter model at each precision (weights only)."""
    return [{"precision": p, "bytes_per_param": b, "gb": params * b / 1e9} for p, b in SERVING_BYTES.items()]


if __name__ == "__main__":  # python -m taskfit.shrink FOLDER < prompts.json: one footprint as JSON
    torch.set_num_threads(1)
    print(json.dumps(_measure(Path(sys.argv[1]), json.loads(sys.stdin.read()))))
