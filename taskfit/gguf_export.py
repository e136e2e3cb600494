"""Writing a Llama-architecture model folder as one GGUF file, the format llama.cpp and Ollama serve.

The file is written with the ``gguf`` package's ``GGUFWriter``. Its tokenizer (vocabulary, merges, special
tokens, pre-tokenizer name) and chat template are copied from the GGUF the model's base came from (the
bundled SmolLM2 ships as one): rebuilding them from an HF tokenizer needs llama.cpp's converter, which
identifies the pre-tokenizer by hashing its output, so a model without a source GGUF is refused. The
hyperparameters are written from the folder's ``config.json`` and the weights under llama.cpp's tensor
names, with the query/key rows in llama.cpp's rotary layout (transformers undoes that permutation when it
loads a GGUF).

``f32`` is exact; ``f16`` halves the file; ``q8_0`` stores blocks of 32 weights as int8 with one f16
scale (8.5 bits a weight). Norm weights stay f32 in every precision, as llama.cpp's converter keeps them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from taskfit.errors import TaskfitError

PRECISIONS = ("f32", "f16", "q8_0")  # `taskfit shrink --to gguf-f16` etc.
SOURCE_PREFIX = "converted from "  # first line of the SOURCE file taskfit.bundled writes next to a conversion


def source_gguf(folder: Path) -> Path | None:
    """The GGUF file a converted model folder came from (``taskfit.bundled.converted_gguf``), if any."""
    marker = Path(folder) / "SOURCE"
    line = (marker.read_text().splitlines() or [""])[0] if marker.is_file() else ""
    path = Path(line.removeprefix(SOURCE_PREFIX)) if line.startswith(SOURCE_PREFIX) else None
    return path if path and path.is_file() else None


def permute_rotary(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a query/key projection from transformers' rotary layout (first half, second half
    of each head) to llama.cpp's (interleaved pairs); ``n_head`` is the number of heads the rows hold."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qtypes(precision: str):
    from gguf import GGMLQuantizationType as Q
    from gguf import LlamaFileType as F

    table = {"f32": (Q.F32, F.ALL_F32), "f16": (Q.F16, F.MOSTLY_F16), "q8_0": (Q.Q8_0, F.MOSTLY_Q8_0)}
    if precision not in table:
        raise TaskfitError(f"GGUF precision {precision!r}: choose one of {', '.join(PRECISIONS)}", field="to")
    return table[precision]


def _llama_config(folder: Path):
    from transformers import AutoConfig

    if not (folder / "config.json").is_file():
        raise TaskfitError(f"{folder} has no config.json: not a model folder")
    config = AutoConfig.from_pretrained(folder)
    if config.model_type != "llama":
        raise TaskfitError(f"GGUF export writes Llama-architecture models; {folder} is {config.model_type!r}")
    rope = getattr(config, "rope_parameters", None) or {"rope_type": "default",
                                                         "rope_theta": getattr(config, "rope_theta", 10000.0)}
    if rope.get("rope_type", "default") != "default":
        raise TaskfitError(f"GGUF export supports the default rotary embedding; {folder} uses "
                           f"{rope['rope_type']!r}")
    if config.attention_bias or config.mlp_bias:
        raise TaskfitError(f"GGUF export does not write bias terms; {folder} has attention or MLP biases")
    return config, float(rope["rope_theta"])


def _copy_metadata(reader, writer, skip_prefixes: tuple[str, ...]) -> None:
    """Every key/value pair of ``reader`` except the header and the keys under ``skip_prefixes``."""
    from gguf import GGUFValueType

    for key, field in reader.fields.items():
        if key.startswith(("GGUF.", *skip_prefixes)):
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub)


def _check_tokenizer(reader, folder: Path, source: Path) -> None:
    from transformers import AutoTokenizer

    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.convert_ids_to_tokens(list(range(len(tokens)))) != tokens or len(tok) != len(tokens):
        raise TaskfitError(f"the tokenizer in {folder} differs from the one in {source}; the GGUF's tokenizer "
                           "metadata is copied from its source, so they must match")


def export(folder: Path, out: Path, *, source: Path, precision: str = "f16", name: str | None = None) -> Path:
    """Write the Llama model in ``folder`` to the GGUF file ``out`` at ``precision`` (f32, f16, q8_0), with
    the tokenizer and chat template of the GGUF file ``source``; an existing ``out`` is reused."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    folder, out, source = Path(folder), Path(out), Path(source)
    qtype, file_type = _qtypes(precision)
    if out.is_file():
        return out
    config, rope_theta = _llama_config(folder)
    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise TaskfitError(f"{source} is a {arch!r} GGUF; GGUF export copies the metadata of a 'llama' one")
    _check_tokenizer(reader, folder, source)

    hf_logging.set_verbosity_error()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    n_layers, n_head, n_kv = config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_head

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
    writer = gguf.GGUFWriter(tmp, "llama")  # writes general.architecture itself
    # hyperparameters and file-level keys come from this model, everything else (tokenizer, chat template,
    # provenance) from the source
    _copy_metadata(reader, writer, skip_prefixes=("llama.", "general.architecture", "general.file_type",
                                                  "general.quantization_version", "general.name"))
    writer.add_name(name or folder.name)
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(n_layers)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * n_head != config.hidden_size:  # llama.cpp assumes hidden_size / heads unless told
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(rope_theta)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    for hf_name, t in model.state_dict().items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # a GGUF without output.weight ties the head to token_embd
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight",))
        if gguf_name is None:
            raise TaskfitError(f"{folder}: no llama.cpp name for tensor {hf_name!r}")
        w = t.detach().numpy()
        if hf_name.endswith("self_attn.q_proj.weight"):
            w = permute_rotary(w, n_head)
        elif hf_name.endswith("self_attn.k_proj.weight"):
            w = permute_rotary(w, n_kv)
        t_qtype = qtype
        if w.ndim == 1:
            t_qtype = gguf.GGMLQuantizationType.F32
        elif qtype == gguf.GGMLQuantizationType.Q8_0 and w.shape[-1] % 32:
            t_qtype = gguf.GGMLQuantizationType.F16  # rows not a whole number of q8_0 blocks, as llama.cpp does
        data = gguf.quants.quantize(np.ascontiguousarray(w, dtype=np.float32), t_qtype)
        writer.add_tensor(gguf_name, data, raw_dtype=t_qtype)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        writer.close()
    os.replace(tmp, out)
    return out


def shrink_to_gguf(parent: Path, precision: str, out: Path, *, base: Path) -> Path:
    """``taskfit shrink --to gguf-<precision>``: export ``parent`` to ``out``/model.gguf, with the tokenizer of
    the GGUF that ``base`` (the parent itself, or a tuned model's base folder) was converted from; the folder
    loads through the hf backend like the other shrunk copies."""
    source = source_gguf(base)
    if source is None:
        raise TaskfitError(f"GGUF export copies the tokenizer metadata of the GGUF the model came from; {base} "
                           "was not converted from a GGUF (use the bundled model or a .gguf base)", field="to")
    export(parent, out / "model.gguf", source=source, precision=precision.removeprefix("gguf-"), name=out.name)
    (out / "shrink.json").write_text(json.dumps(
        {"parent": str(parent), "precision": precision, "source": str(source)}, indent=2))
    return out


def tuned_base(workspace, tune_id: str) -> Path:
    """The base model folder a tuned model was trained from."""
    from taskfit.tuning.models import base_folder

    meta = json.loads((workspace.tunes.get(tune_id).folder / "tune.json").read_text())
    return base_folder(meta["base_model"], Path(meta["task_root"]))
