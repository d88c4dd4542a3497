"""The WSGI entry point: `taskmon.wsgi:app`. Built in each worker after fork (no preload)."""

import logging

from taskmon.app import create_app

if not logging.getLogger().handlers:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"
    )

app = create_app()
