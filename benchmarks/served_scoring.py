"""Label scoring through an OpenAI-compatible server vs in-process, on SST-2 with the bundled model.

The server is the loopback vLLM-style server of the test suite (tests/hf_server.py: /tokenize and
/v1/completions with echo + logprobs, answered by transformers), so both sides run the same weights; the
served side goes through the openai backend's probe and its `completions` path. Prints each side's accuracy,
how often their per-example choices agree, and the largest difference of a calibrated label log-likelihood.

    .venv/bin/python benchmarks/served_scoring.py --n 100
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="test rows")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import serving
    from hf_server import HFServer

    from taskfit import bundled
    from taskfit.study import run_study
    from taskfit.workspace import Workspace

    src = ROOT / "examples/sst2/task.yaml"
    config = yaml.safe_load(src.read_text())
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace.open(Path(tmp) / "home")
        server = HFServer(bundled.smollm2_dir(), name="smollm2-135m")
        for split in ("train", "test"):
            config["data"][split] = str(src.parent / config["data"][split])
        config.update(strategies=["zero_shot"], tuning=[], limit=args.n,
                      models=["bundled", {"backend": "openai", "name": "served", "base_url": server.base_url,
                                          "model": "smollm2-135m", "concurrency": 1}])
        path = Path(tmp) / "task.yaml"
        path.write_text(yaml.safe_dump(config))
        with serving(server.httpd):
            _, rows = run_study(path, workspace=workspace)
        store = workspace.runs
        by = {r["model"]: r for r in rows}
        preds = {m: {p["example_id"]: p for p in store.predictions(by[m]["run_id"])} for m in by}
        local, served = preds["smollm2-135m"], preds["served"]
        agree = sum(local[k]["answer"] == served[k]["answer"] for k in local) / len(local)
        diff = max(abs(local[k]["trace"]["details"]["label_logprobs"][lab] -
                       served[k]["trace"]["details"]["label_logprobs"][lab])
                   for k in local for lab in config["labels"])
        for m, r in by.items():
            print(f"{m:14s} score_via={r['score_via']:12s} accuracy={r['score']:.3f} n={r['n']}")
        print(f"agreement of per-example choices: {agree:.1%}; largest label log-likelihood difference: {diff:.2e}")


if __name__ == "__main__":
    main()
