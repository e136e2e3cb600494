"""Soak test of `taskfit serve`: a real server process on loopback, hit by N clients for a bounded time.

The server runs `taskfit serve` as a child process on a scripted model (a fixed delay per call stands in
for the model) in a fresh TASKFIT_HOME, with short retention limits so pruning runs during the soak. Each
client loops until --duration-s is over, picking each request at random:

  valid       a short question (half of them in one of a few conversations)         expect 200
  large       a ~900 kB one-word message (a pasted blob: the redaction worst case)   expect 200
  huge        a body over serve.max_body_bytes                                       expect 413
  malformed   broken JSON, wrong types, no user message, unknown model, bad ids      expect 400/404
  foreign     a Host or Origin of another site (DNS rebinding)                       expect 403
  slow        a valid body sent in pieces over ~2 s (a slow client)                  expect 200
  abandoned   half a body, then the connection closes                                no answer expected

Prints requests served, outcomes and errors by kind (an error is any answer other than the expected one, or
a failed connection), p50/p99 latency of the valid kinds, the server's RSS (resident memory) after warm-up
at half time and at the end (sampled every 5 s: the peak too), and the database size at start and end. The
soak passes when no valid request got a 5xx and the RSS grew by less than --max-late-growth over the second
half.

    .venv/bin/python benchmarks/serve_soak.py --duration-s 600 --clients 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
VALID_KINDS = ("valid", "large", "slow")
EXPECTED = {"valid": {200}, "large": {200}, "slow": {200}, "huge": {413}, "malformed": {400, 404},
            "foreign": {403}, "abandoned": {None}}
WEIGHTS = {"valid": 60, "large": 4, "huge": 6, "malformed": 14, "foreign": 6, "slow": 6, "abandoned": 4}
MAX_BODY = 1_000_000
# `taskfit serve` with one change: the scripted model keeps every request it receives (tests read them), which
# would grow with the soak; here it keeps the last 100, so the memory measured is the server's own
LAUNCH = """
import collections, sys
from taskfit.backends import scripted
from taskfit.cli import main
init = scripted.ScriptedBackend.__init__
def bounded(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.requests = collections.deque(maxlen=100)
scripted.ScriptedBackend.__init__ = bounded
sys.argv = ["taskfit", *sys.argv[1:]]
main()
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration-s", type=float, default=600, help="how long the clients send requests")
    ap.add_argument("--clients", type=int, default=20, help="concurrent clients")
    ap.add_argument("--model-delay-s", type=float, default=0.02, help="scripted model: seconds per call")
    ap.add_argument("--max-late-growth", type=float, default=1.15,
                    help="pass bound: RSS at the end / RSS at half time (a leak keeps growing; a bounded server "
                    "levels off once its pools and buffers have grown to the load)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="taskfit-serve-soak-"))
    task = _task(home, args.model_delay_s)
    port = _free_port()
    env = {**os.environ, "TASKFIT_HOME": str(home / "store"), "OMP_NUM_THREADS": "1"}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)  # loopback only
    log = (home / "server.log").open("w")  # a file, not a pipe: a full pipe would stall the server
    server = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", "--task", str(task), "--port", str(port)],
                              env=env, stdout=log, stderr=log, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server)
        httpx.post(f"{url}/v1/chat/completions", json=_chat("warm-up"), timeout=60)
        rss_start, db_start = _rss_kb(server.pid), _db_bytes(home)
        stats = asyncio.run(_soak(url, port, args, server.pid))
        rss_end, db_end = _rss_kb(server.pid), _db_bytes(home)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    _report(stats, args, rss_start, rss_end, db_start, db_end, (home / "server.log").read_text())


def _task(home: Path, delay_s: float) -> Path:
    questions = [{"id": f"q{i}", "question": f"question {i}?", "answer": f"answer {i}"} for i in range(50)]
    (home / "qa.jsonl").write_text("".join(json.dumps(q) + "\n" for q in questions))
    config = {
        "name": "qa", "data": {"test": "qa.jsonl"}, "inputs": ["question"], "output": "answer",
        "metrics": ["exact_match"], "parse": {"type": "text"}, "strategies": ["zero_shot"],
        "prompt": {"instruction": "Answer the question.", "input_template": "Question: {{ question }}"},
        "models": [{"backend": "scripted", "name": "fake", "script": {
            "replies": {f"question {i}?": f"answer {i}" for i in range(50)}, "default": "I do not know.",
            "delay_s": delay_s}}],
        "serve": {"max_body_bytes": MAX_BODY, "memory": {"max_turns": 4},
                  "retention": {"every_s": 20, "request_log_rows": 2000, "cache_entries": 200,
                                "conversation_messages": 500}},
    }
    path = home / "qa.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "qa", "messages": [{"role": "user", "content": text}], **extra}


async def _soak(url: str, port: int, args: argparse.Namespace, pid: int) -> dict[str, Any]:
    rng = random.Random(args.seed)
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    outcomes: dict[str, Counter] = defaultdict(Counter)
    errors: dict[str, Counter] = defaultdict(Counter)
    latencies: dict[str, list[float]] = defaultdict(list)
    rss_samples: list[int] = []
    blobs = ["".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                     for _ in range(1000)) * 900 for _ in range(3)]
    end = time.monotonic() + args.duration_s

    async def one(client: httpx.AsyncClient, kind: str) -> int | None:
        if kind == "valid":
            extra = {"conversation_id": f"conv-{rng.randrange(5)}"} if rng.random() < 0.5 else {}
            res = await client.post("/v1/chat/completions", json=_chat(f"question {rng.randrange(60)}?", **extra))
        elif kind == "large":
            res = await client.post("/v1/chat/completions", json=_chat(rng.choice(blobs)))
        elif kind == "huge":
            res = await client.post("/v1/chat/completions", json=_chat("z" * (MAX_BODY + 10_000)))
        elif kind == "malformed":
            choice = rng.randrange(5)
            if choice == 0:
                res = await client.post("/v1/chat/completions", content=b'{"model": "qa", "messages": [',
                                        headers={"content-type": "application/json"})
            elif choice == 1:
                res = await client.post("/v1/chat/completions", json={"model": "qa", "messages": "hello"})
            elif choice == 2:
                res = await client.post("/v1/chat/completions", json={"model": "qa", "messages": [
                    {"role": "system", "content": "no user"}]})
            elif choice == 3:
                res = await client.post("/v1/chat/completions", json=_chat("hi", model="gpt-4o"))
            else:
                res = await client.post("/v1/chat/completions", json=_chat("hi"),
                                        headers={"X-Conversation-Id": "x" * 500})
        elif kind == "foreign":
            headers = {"Host": f"evil.example:{port}"} if rng.random() < 0.5 else {"Origin": "http://evil.example"}
            res = await client.post("/v1/chat/completions", json=_chat("hi"), headers=headers)
        elif kind == "slow":
            return await _raw(port, json.dumps(_chat(f"question {rng.randrange(50)}?")).encode(), pieces=8,
                              pause_s=0.25)
        else:
            return await _raw(port, json.dumps(_chat("never finished")).encode(), pieces=2, pause_s=0.1,
                              abandon=True)
        return res.status_code

    async def client_loop(c: int) -> None:
        # reuse a connection only while it is surely open: uvicorn closes one idle for 5 s, httpx's default too
        limits = httpx.Limits(keepalive_expiry=2.0)
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
            while time.monotonic() < end:
                kind = rng.choices(kinds, weights)[0]
                t0 = time.perf_counter()
                try:
                    status = await one(client, kind)
                except (httpx.TransportError, OSError) as e:
                    outcomes[kind][type(e).__name__] += 1
                    errors[kind][type(e).__name__] += 1
                    continue
                if kind in VALID_KINDS and status == 200:
                    latencies[kind].append((time.perf_counter() - t0) * 1000)
                outcomes[kind][status] += 1
                if status not in EXPECTED[kind]:
                    errors[kind][status] += 1

    async def sample_rss() -> None:
        while time.monotonic() < end:
            rss_samples.append(_rss_kb(pid))
            await asyncio.sleep(5)

    t0 = time.perf_counter()
    await asyncio.gather(sample_rss(), *(client_loop(c) for c in range(args.clients)))
    return {"outcomes": outcomes, "errors": errors, "latencies": latencies, "rss": rss_samples,
            "wall_s": time.perf_counter() - t0}


async def _raw(port: int, body: bytes, pieces: int, pause_s: float, abandon: bool = False) -> int | None:
    """POST ``body`` over a raw connection in ``pieces`` parts with pauses; the status, or None if abandoned."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: "
                     f"application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        step = max(1, len(body) // pieces)
        for i in range(0, len(body), step):
            if abandon and i >= len(body) // 2:
                return None
            writer.write(body[i:i + step])
            await writer.drain()
            await asyncio.sleep(pause_s)
        status_line = await asyncio.wait_for(reader.readline(), timeout=120)
        await reader.read()
        return int(status_line.split()[1])
    finally:
        writer.close()
        await writer.wait_closed()


def _report(stats: dict[str, Any], args: argparse.Namespace, rss_start: int, rss_end: int, db_start: int,
            db_end: int, server_err: str) -> None:
    outcomes, errors = stats["outcomes"], stats["errors"]
    total = sum(sum(c.values()) for c in outcomes.values())
    print(f"soak: {args.clients} clients for {stats['wall_s']:.0f} s: {total} requests "
          f"({total / stats['wall_s']:.1f}/s)")
    for kind in WEIGHTS:
        got = ", ".join(f"{k}: {n}" for k, n in sorted(outcomes[kind].items(), key=str))
        bad = sum(errors[kind].values())
        print(f"  {kind:<10} {sum(outcomes[kind].values()):>6}  {got}" + (f"  UNEXPECTED {dict(errors[kind])}" if bad
                                                                           else ""))
    for kind in VALID_KINDS:
        lat = sorted(stats["latencies"][kind])
        if lat:
            print(f"  latency {kind:<6} p50 {lat[len(lat) // 2]:.0f} ms  p99 {lat[min(len(lat) - 1, int(0.99 * len(lat)))]:.0f} ms"
                  f"  (n={len(lat)})")
    five_xx = sum(n for kind in VALID_KINDS for status, n in outcomes[kind].items()
                  if isinstance(status, int) and status >= 500)
    peak = max(stats["rss"], default=rss_end)
    half = stats["rss"][len(stats["rss"]) // 2] if stats["rss"] else rss_start
    growth, late = rss_end / rss_start, rss_end / half
    print(f"  server RSS: {rss_start / 1024:.1f} MB after warm-up, {half / 1024:.1f} MB at half time, "
          f"{rss_end / 1024:.1f} MB at the end (x{growth:.2f} overall, x{late:.2f} over the second half), "
          f"peak {peak / 1024:.1f} MB")
    every = max(1, len(stats["rss"]) // 10)
    print("  server RSS over time (MB): " + " ".join(f"{r / 1024:.0f}" for r in stats["rss"][::every]))
    print(f"  database: {db_start / 1e6:.1f} MB at start, {db_end / 1e6:.1f} MB at the end")
    print(f"  5xx on valid requests: {five_xx}; unexpected answers: "
          f"{sum(sum(c.values()) for c in errors.values())}")
    if "Traceback" in server_err:
        print("  server stderr has a traceback:\n" + server_err[-3000:])
    ok = five_xx == 0 and late < args.max_late_growth
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _db_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in (home / "store").glob("taskfit.db*"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen) -> None:
    deadline = time.time() + 120
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the server did not start within 120 s")


if __name__ == "__main__":
    main()
