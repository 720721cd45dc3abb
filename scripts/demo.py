"""Run the agent once against the recorded fixtures, entirely on this machine.

Starts a Postgres (DATABASE_URL if given, else a local or throwaway server), a fake
GitLab and a fake Bitbucket Cloud serving tests/fixtures/, and the reference MHQ
receiver, then runs
``mhq-agent sync``, ``mhq-agent heartbeat`` and ``mhq-agent status`` as a user would,
and prints what the receiver decrypted and verified.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes.bitbucket import FakeBitbucket  # noqa: E402
from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.keys import make_receiver_keys  # noqa: E402
from tests.fakes.postgres import database_url, fresh_database  # noqa: E402
from tests.fakes.receiver import Receiver  # noqa: E402

WORK_DIR = ROOT / ".demo"
AGENT = [sys.executable, "-m", "agent"]


def main() -> int:
    WORK_DIR.mkdir(exist_ok=True)
    print("Starting Postgres, fake GitLab and Bitbucket, and an MHQ receiver ...")
    db = fresh_database(database_url())
    keys = make_receiver_keys()
    with (
        FakeGitLab() as gitlab,
        FakeBitbucket() as bitbucket,
        Receiver(keys.private_pem, keys.client_secret, keys.client_id) as receiver,
    ):
        config = _write_config(gitlab.url, bitbucket, receiver.url, keys, db)
        print(f"  fake GitLab     {gitlab.url}")
        print(f"  fake Bitbucket  {bitbucket.url}")
        print(f"  receiver        {receiver.url}\n")
        for command in ("sync", "heartbeat", "status"):
            code = _agent(config, command)
            if code != 0:
                print(f"mhq-agent {command} exited with {code}")
                return code
        _report(receiver, gitlab.request_count(), bitbucket.request_count())
    return 0


def _write_config(
    gitlab_url: str, bitbucket: FakeBitbucket, receiver_url: str, keys: object, db: str
) -> Path:
    config = {
        "database_url": db,
        "mhq": {
            "webhook_url": receiver_url,
            "client_id": keys.client_id,  # type: ignore[attr-defined]
            "client_secret": keys.client_secret,  # type: ignore[attr-defined]
            "public_key": keys.public_pem,  # type: ignore[attr-defined]
        },
        "integrations": {
            "gitlab": {
                "domain_url": gitlab_url,
                "access_token": "glpat-test-token",
                "repositories": [
                    f"{gitlab_url}/gitlab-data/snowflake_spend",
                    f"{gitlab_url}/merico-dev",
                ],
            },
            "bitbucket": {
                "api_url": bitbucket.url,
                "access_token": "bb-test-token",
                "repositories": [f"{bitbucket.web_url}/user-38/user-38php"],
            },
        },
        # The fixtures date from 2015 to 2023: fetch the whole history.
        "sync": {"initial_days": 0},
    }
    path = WORK_DIR / "config.json"
    path.write_text(json.dumps(config, indent=2))
    path.chmod(0o600)
    return path


def _agent(config: Path, command: str) -> int:
    print(f"$ mhq-agent {command}")
    args = [
        *AGENT,
        "--config",
        str(config),
        "--log-format",
        "text",
        "--log-level",
        "WARNING",
        command,
    ]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    completed = subprocess.run(args, cwd=ROOT, env=env, check=False)
    print()
    return completed.returncode


def _report(receiver: Receiver, gitlab_requests: int, bitbucket_requests: int) -> None:
    records = receiver.records()
    print(
        f"The receiver verified and decrypted {len(receiver.batches())} batches and "
        f"{len(receiver.heartbeats())} heartbeat; the agent made {gitlab_requests} "
        f"GitLab and {bitbucket_requests} Bitbucket requests.\n"
    )
    counts = Counter((record.entity, record.provider) for record in records)
    print(f"  {'records':<22} {'gitlab':>7} {'bitbucket':>10}")
    for entity in sorted({entity for entity, _ in counts}):
        gitlab, bitbucket = counts[(entity, "gitlab")], counts[(entity, "bitbucket")]
        print(f"  {entity:<22} {gitlab:>7} {bitbucket:>10}")
    print("\nA few merge and pull requests as MHQ received them:")
    for provider in ("gitlab", "bitbucket"):
        _print_pull_requests(
            [
                r.record
                for r in records
                if r.entity == "pull_requests" and r.provider == provider
            ]
        )


def _print_pull_requests(pull_requests: list[dict[str, object]]) -> None:
    for mr in sorted(pull_requests, key=lambda m: int(str(m["number"])))[:3]:
        title = str(mr["title"])[:50]
        number = f"#{mr['number']}"
        line = f"{mr['provider']:<9} {number:<4} {mr['state']:<7} {mr['created_at']}"
        print(f"  {line}  {title}")


if __name__ == "__main__":
    raise SystemExit(main())
