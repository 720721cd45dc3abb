"""MiddlewareHQ sync agent: fetches code-host data, strips it, stores it and pushes it to MHQ."""

__version__ = "0.1.0"
