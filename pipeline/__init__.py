"""roomlogs: ingestion pipeline for chat-room activity logs."""

__version__ = "0.1.0"
__all__ = ["__version__"]
