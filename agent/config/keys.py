"""Every configuration key, with its name in each source.

The config.json path (``mhq.webhook_url``) is the canonical name used everywhere in
the code; the environment variable and SSM parameter names map onto it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    STRING = "string"
    SECRET = "secret"  # noqa: S105 - the name of a kind, not a password
    URL = "url"
    LIST = "list"
    INTEGER = "integer"
    CRON = "cron"
    TIMEZONE = "timezone"
    CHOICE = "choice"


@dataclass(frozen=True)
class Key:
    """One setting: its config.json path, environment name, SSM name and kind."""

    path: str
    env: str | None
    kind: Kind = Kind.STRING
    default: object = None
    choices: tuple[str, ...] = ()

    @property
    def ssm(self) -> str:
        """The parameter name below the SSM prefix, e.g. ``gitlab/access_token``."""
        return SSM_NAMES.get(self.path, self.path.replace(".", "/"))

    @property
    def secret(self) -> bool:
        return self.kind is Kind.SECRET


PRIVACY_CHOICES = ("send", "redact", "pseudonymise")

KEYS: tuple[Key, ...] = (
    Key("mhq.webhook_url", "MHQ_WEBHOOK_URL", Kind.URL),
    Key("mhq.heartbeat_url", "MHQ_HEARTBEAT_URL", Kind.URL),
    Key("mhq.client_id", "MHQ_CLIENT_ID"),
    Key("mhq.client_secret", "MHQ_CLIENT_SECRET", Kind.SECRET),
    Key("mhq.public_key", "MHQ_PUBLIC_KEY"),
    Key("mhq.agent_id", "MHQ_AGENT_ID"),
    Key("database_url", "DATABASE_URL", Kind.SECRET),
    Key(
        "integrations.gitlab.domain_url",
        "GITLAB_DOMAIN_URL",
        Kind.URL,
        "https://gitlab.com",
    ),
    Key("integrations.gitlab.access_token", "GITLAB_ACCESS_TOKEN", Kind.SECRET),
    Key("integrations.gitlab.ca_bundle", "GITLAB_CA_BUNDLE"),
    Key("integrations.gitlab.repositories", None, Kind.LIST, ()),
    # GitLab.com allows about 2,000 API requests a minute per user. A self-managed
    # instance may allow far fewer, and its owner may not want it loaded.
    # 0 turns the budget off.
    Key(
        "integrations.gitlab.requests_per_minute",
        "GITLAB_REQUESTS_PER_MINUTE",
        Kind.INTEGER,
        600,
    ),
    Key("integrations.bitbucket.access_token", "BITBUCKET_ACCESS_TOKEN", Kind.SECRET),
    Key("integrations.bitbucket.workspace_name", "BITBUCKET_WORKSPACE_NAME"),
    Key(
        "integrations.bitbucket.api_url",
        "BITBUCKET_API_URL",
        Kind.URL,
        "https://api.bitbucket.org/2.0",
    ),
    Key("integrations.bitbucket.repositories", None, Kind.LIST, ()),
    # Bitbucket Cloud allows about 1,000 repository-data requests an hour per token.
    Key(
        "integrations.bitbucket.requests_per_hour",
        "BITBUCKET_REQUESTS_PER_HOUR",
        Kind.INTEGER,
        900,
    ),
    Key("schedule.fetch", "FETCH_SCHEDULE", Kind.CRON, "0 */6 * * *"),
    Key("schedule.push", "PUSH_SCHEDULE", Kind.CRON, "30 */6 * * *"),
    Key("schedule.heartbeat", "HEARTBEAT_SCHEDULE", Kind.CRON, "*/5 * * * *"),
    Key("schedule.timezone", "SCHEDULE_TIMEZONE", Kind.TIMEZONE, "UTC"),
    Key("sync.initial_days", "INITIAL_SYNC_DAYS", Kind.INTEGER, 90),
    Key("privacy.pseudonym_key", "PRIVACY_PSEUDONYM_KEY", Kind.SECRET),
    Key("privacy.titles", "PRIVACY_TITLES", Kind.CHOICE, "send", PRIVACY_CHOICES),
    Key(
        "privacy.branch_names",
        "PRIVACY_BRANCH_NAMES",
        Kind.CHOICE,
        "send",
        PRIVACY_CHOICES,
    ),
    Key(
        "privacy.repository_names",
        "PRIVACY_REPOSITORY_NAMES",
        Kind.CHOICE,
        "send",
        PRIVACY_CHOICES,
    ),
    # Tuning knobs beyond the contract's names; each has a safe default.
    Key("http.max_concurrency", "HTTP_MAX_CONCURRENCY", Kind.INTEGER, 4),
    Key("http.timeout_s", "HTTP_TIMEOUT_S", Kind.INTEGER, 30),
    Key("http.retry_budget_s", "HTTP_RETRY_BUDGET_S", Kind.INTEGER, 120),
    Key("push.max_batch_records", "PUSH_MAX_BATCH_RECORDS", Kind.INTEGER, 2000),
    Key("push.max_batch_bytes", "PUSH_MAX_BATCH_BYTES", Kind.INTEGER, 4_000_000),
    Key("push.retry_budget_s", "PUSH_RETRY_BUDGET_S", Kind.INTEGER, 120),
    # Days a delivered batch and a finished job run are kept; 0 prunes at once.
    Key("retention.delivered_days", "RETENTION_DELIVERED_DAYS", Kind.INTEGER, 7),
    Key("retention.job_runs_days", "RETENTION_JOB_RUNS_DAYS", Kind.INTEGER, 30),
    Key("log.format", "LOG_FORMAT", Kind.CHOICE, None, ("json", "text")),
    Key(
        "log.level",
        "LOG_LEVEL",
        Kind.CHOICE,
        "INFO",
        ("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
)

# The contract names these SSM parameters differently from their config.json path.
SSM_NAMES = {
    "integrations.gitlab.domain_url": "gitlab/domain_url",
    "integrations.gitlab.access_token": "gitlab/access_token",
    "integrations.gitlab.ca_bundle": "gitlab/ca_bundle",
    "integrations.gitlab.repositories": "gitlab/repositories",
    "integrations.gitlab.requests_per_minute": "gitlab/requests_per_minute",
    "integrations.bitbucket.access_token": "bitbucket/access_token",
    "integrations.bitbucket.workspace_name": "bitbucket/workspace_name",
    "integrations.bitbucket.api_url": "bitbucket/api_url",
    "integrations.bitbucket.repositories": "bitbucket/repositories",
    "integrations.bitbucket.requests_per_hour": "bitbucket/requests_per_hour",
    "sync.initial_days": "sync/initial_days",
}

KEYS_BY_PATH = {key.path: key for key in KEYS}
KEYS_BY_ENV = {key.env: key for key in KEYS if key.env}
KEYS_BY_SSM = {key.ssm: key for key in KEYS}
