"""Serve one strategy x model arm of a task as an OpenAI-compatible chat server (`taskfit serve`).

A request flows: HTTP (app.py: auth, size limit, validation) -> vetting.py (refuse, redact) -> memory.py
(earlier turns) -> pipeline.py (the request as a task example, the strategy's prediction; tools.py for
request tools) -> batching.py (concurrent model calls become one batch) -> log.py (latency, tokens).
"""
