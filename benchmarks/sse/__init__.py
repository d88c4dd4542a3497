"""SSE at scale: streams held open at once on gunicorn -w 4, taskmon against flask-sse."""
