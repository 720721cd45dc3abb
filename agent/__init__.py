"""MiddlewareHQ sync agent: fetch code-host data, strip it, store it, push it to MHQ."""

__version__ = "0.1.0"
