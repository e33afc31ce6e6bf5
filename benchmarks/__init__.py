"""Benchmarks: MoA against its latency limit, a raw-asyncio baseline, orchestration cost, memory.

Run them all with ``.venv/bin/python -m benchmarks.run`` (results go to benchmarks/RESULTS.md).
"""
