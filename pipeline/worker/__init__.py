"""The worker process: a faust-streaming app hosting the batch ingest loop, metrics and maintenance."""

from pipeline.worker.app import create_app

__all__ = ["create_app"]
