"""The agent's exception tree: one root, one branch per layer.

Retryable and fatal failures are distinguished by type, never by parsing a message.
Errors from requests, psycopg2 and boto3 are translated where they are caught and
chained with ``from exc``.
"""

from __future__ import annotations


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""


class RetryableError(AgentError):
    """Marker: the same call may succeed later (timeout, 429, 5xx, lost connection)."""


class ConfigError(AgentError):
    """A configuration value is missing or invalid.

    ``key`` is the config.json path of the value and ``source`` names where it came
    from (``environment MHQ_WEBHOOK_URL``, ``config file ./config.json``, ...). The
    message never contains the value of a secret.
    """

    def __init__(self, key: str, source: str, problem: str) -> None:
        self.key = key
        self.source = source
        self.problem = problem
        super().__init__(f"invalid configuration {key} (from {source}): {problem}")


class ProviderError(AgentError):
    """A code host request failed in a way that retrying now will not fix."""

    def __init__(self, message: str, *, status: int | None = None, code: str = "error"):
        self.status = status
        self.code = code
        super().__init__(message)


class ProviderRetryableError(ProviderError, RetryableError):
    """A code host request failed after its retries; the next run may succeed."""


class AuthError(ProviderError):
    """The code host rejected the token (401) or its scopes (403)."""


class NotFoundError(ProviderError):
    """The project, group or endpoint does not exist or the token cannot see it."""


class StoreError(AgentError):
    """The local Postgres store failed."""


class StoreUnavailableError(StoreError, RetryableError):
    """Postgres cannot be reached right now."""


class DeliveryError(AgentError):
    """Pushing to MHQ failed."""


class DeliveryRetryableError(DeliveryError, RetryableError):
    """MHQ did not accept a message now but may later (408, 425, 429, 5xx, network)."""


class DeliveryStoppedError(DeliveryError):
    """MHQ refused the agent's credentials or endpoint (401, 403, 404, 410)."""

    def __init__(self, message: str, *, status: int) -> None:
        self.status = status
        super().__init__(message)
