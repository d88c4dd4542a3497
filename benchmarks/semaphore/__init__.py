"""RedisSemaphore against the raw Redis round trip, measured side by side in one run.

    python -m benchmarks.semaphore [--rounds 5] [--duration 2] [--out results.json]

One redis-server (started here, on 127.0.0.1 and a free port) serves a pool of worker
processes (spawn context), each with its own client, subscriber and semaphores, built the way
a gunicorn worker builds them (make_client, RedisSubscriber, RedisSemaphore). Every round
measures every metric once, in an order rotated from round to round, so the noise of a shared
machine hits all metrics alike. The report gives each metric's median over the rounds with its
spread, and ratios computed within each round (ours / the EVALSHA baseline of the same round).
See benchmarks/README.md for how to read them.
"""
