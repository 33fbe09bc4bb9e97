"""queuesvc: a FastAPI API that hands heavy work to Celery workers."""

__version__ = "0.1.0"
