"""Run the agent once against the recorded fixtures, entirely on this machine.

Starts a Postgres (DATABASE_URL if given, else a local or throwaway server), the
fake GitLab serving tests/fixtures/gitlab and the reference MHQ receiver, then runs
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

from tests.fakes.gitlab import FakeGitLab  # noqa: E402
from tests.fakes.keys import make_receiver_keys  # noqa: E402
from tests.fakes.postgres import database_url, fresh_database  # noqa: E402
from tests.fakes.receiver import Receiver  # noqa: E402

WORK_DIR = ROOT / ".demo"
AGENT = [sys.executable, "-m", "agent"]


def main() -> int:
    WORK_DIR.mkdir(exist_ok=True)
    print("Starting Postgres, the fake GitLab and the MHQ receiver on 127.0.0.1 ...")
    db = fresh_database(database_url())
    keys = make_receiver_keys()
    with (
        FakeGitLab() as gitlab,
        Receiver(keys.private_pem, keys.client_secret, keys.client_id) as receiver,
    ):
        config = _write_config(gitlab.url, receiver.url, keys, db)
        print(f"  fake GitLab  {gitlab.url}\n  receiver     {receiver.url}\n")
        for command in ("sync", "heartbeat", "status"):
            code = _agent(config, command)
            if code != 0:
                print(f"mhq-agent {command} exited with {code}")
                return code
        _report(receiver, gitlab.request_count())
    return 0


def _write_config(gitlab_url: str, receiver_url: str, keys: object, db: str) -> Path:
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
            }
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


def _report(receiver: Receiver, gitlab_requests: int) -> None:
    records = receiver.records()
    counts = Counter(record.entity for record in records)
    print(
        f"The receiver verified and decrypted {len(receiver.batches())} batch(es) and "
        f"{len(receiver.heartbeats())} heartbeat(s); the agent made {gitlab_requests} "
        "GitLab requests."
    )
    for entity, count in sorted(counts.items()):
        print(f"  {entity:<22} {count}")
    print("\nA few merge requests as MHQ received them:")
    merge_requests = [r.record for r in records if r.entity == "pull_requests"]
    for mr in sorted(merge_requests, key=lambda m: m["number"])[:5]:
        title = mr["title"][:60]
        print(f"  !{mr['number']:<3} {mr['state']:<7} {mr['created_at']}  {title}")


if __name__ == "__main__":
    raise SystemExit(main())
