"""The boot script: shellcheck, and runs under stand-in commands in a scratch root."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from infra.user_data import SCRIPT_PATH, render_script
from tests.infra.support import tool

SETTINGS = {
    "MHQ_REGION": "eu-west-1",
    "MHQ_LOG_GROUP": "MhqAgent-LogsGroup-abc123",
    "MHQ_AGENT_IMAGE": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/agent:7a01",
    "MHQ_POSTGRES_IMAGE": "public.ecr.aws/docker/library/postgres:16.10-bookworm",
    "MHQ_PARAMETER_PREFIX": "/mhq-agent",
    "MHQ_SWAP_MB": "1024",
}

# Each stand-in logs its command line and keeps the state that the script reads back.
FAKES = {
    "rpm": '[ -e "$FAKE_STATE/docker-installed" ]',
    "dnf": 'touch "$FAKE_STATE/docker-installed"',
    "systemctl": """
case "$1" in
enable)
    shift
    [ "$1" = --now ] && shift && touch "$FAKE_STATE/active-$1"
    touch "$FAKE_STATE/enabled-$1" ;;
start | restart) touch "$FAKE_STATE/active-$2" ;;
esac""",
    "dd": """
for arg; do
    case "$arg" in of=*) file=${arg#of=} ;; count=*) count=${arg#count=} ;; esac
done
truncate -s "${count}M" "$file\"""",
    "mkswap": ":",
    "swapon": 'echo "$1 file 1048572 0 -2" >>"$MHQ_ROOT/proc/swaps"',
    "swapoff": ":",
    "sysctl": ":",
    "aws": "echo fake-ecr-password",
    "docker": "cat >/dev/null",
}


@dataclass
class Host:
    """A scratch root with stand-in commands and the log of the commands they ran."""

    root: Path
    state: Path
    log: Path
    bin: Path

    def run(self, script: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
        self.log.write_text("")
        env = {
            "PATH": f"{self.bin}:/usr/bin:/bin",
            "HOME": str(self.root),
            "MHQ_ROOT": str(self.root),
            "FAKE_STATE": str(self.state),
            "FAKE_LOG": str(self.log),
            **SETTINGS,
            **overrides,
        }
        result = subprocess.run(
            ["bash", str(script)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def commands(self) -> list[str]:
        return self.log.read_text().splitlines()

    def snapshot(self) -> dict[str, str]:
        """Every path under the root and the fake state: mode and content.

        Files under the root also carry their modification time, which shows a
        rewrite with equal content. The 1 GiB swap file (sparse here) is compared by
        size instead of being read.
        """
        entries: dict[str, str] = {}
        for base in (self.root, self.state):
            for path in sorted(base.rglob("*")):
                info = path.stat()
                entry = stat.filemode(info.st_mode)
                if path.is_file() and base == self.root:
                    entry += f" {info.st_mtime_ns}"
                if path.is_file() and info.st_size > 1024 * 1024:
                    entry += f" size={info.st_size}"
                elif path.is_file():
                    entry += " " + hashlib.sha256(path.read_bytes()).hexdigest()
                entries[f"{base.name}/{path.relative_to(base)}"] = entry
        return entries

    def read(self, path: str) -> str:
        return (self.root / path).read_text()


@pytest.fixture
def host(tmp_path: Path) -> Host:
    root, state, bin_dir = tmp_path / "root", tmp_path / "state", tmp_path / "bin"
    for directory in (root / "etc", root / "proc", state, bin_dir):
        directory.mkdir(parents=True)
    (root / "etc" / "fstab").write_text("UUID=abc / xfs defaults 0 0\n")
    (root / "proc" / "swaps").write_text("Filename Type Size Used Priority\n")
    for name, body in FAKES.items():
        fake = bin_dir / name
        fake.write_text(f'#!/bin/bash\necho "{name} $*" >>"$FAKE_LOG"\n{body}\n')
        fake.chmod(0o755)
    return Host(root, state, tmp_path / "commands.log", bin_dir)


def test_shellcheck_clean() -> None:
    result = subprocess.run(
        [tool("shellcheck"), "--shell=bash", str(SCRIPT_PATH)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout


def test_rendered_script_sets_settings() -> None:
    rendered = render_script(SETTINGS)

    lines = rendered.splitlines()

    assert lines[0] == "#!/bin/bash"
    assert lines[1] == "export MHQ_REGION='eu-west-1'"
    assert lines[6] == "export MHQ_SWAP_MB='1024'"
    assert rendered.endswith(SCRIPT_PATH.read_text().split("\n", 1)[1])


def test_first_boot_sets_up_host(host: Host) -> None:
    host.run(SCRIPT_PATH)

    commands = host.commands()
    password = host.read("etc/mhq/postgres-password")

    assert "dnf install -y docker" in commands
    assert "systemctl enable --now docker.service" in commands
    assert f"mkswap {host.root}/swapfile" in commands
    assert (host.root / "swapfile").stat().st_size == 1024 * 1024 * 1024
    assert host.read("etc/fstab").count("/swapfile none swap") == 1
    assert len(password) == 48
    assert f"POSTGRES_PASSWORD={password}\n" in host.read("etc/mhq/postgres.env")
    assert (
        f"DATABASE_URL=postgresql://mhq:{password}@mhq-postgres:5432/mhq\n"
        in host.read("etc/mhq/agent.env")
    )
    assert "systemctl restart mhq-postgres.service" in commands
    assert "systemctl restart mhq-agent.service" in commands
    assert (host.state / "enabled-mhq-agent.service").exists()


def test_secret_files_are_root_only(host: Host) -> None:
    host.run(SCRIPT_PATH)

    for name in ("postgres-password", "postgres.env", "agent.env"):
        mode = (host.root / "etc/mhq" / name).stat().st_mode & 0o777
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert (host.root / "etc/mhq").stat().st_mode & 0o777 == 0o700


def test_units_use_host_paths_and_settings(host: Host) -> None:
    host.run(SCRIPT_PATH)

    agent = host.read("etc/systemd/system/mhq-agent.service")
    postgres = host.read("etc/systemd/system/mhq-postgres.service")

    assert str(host.root) not in agent + postgres
    assert "Restart=always" in agent
    assert "Restart=always" in postgres
    assert "WantedBy=multi-user.target" in agent
    assert "--env-file /etc/mhq/agent.env" in agent
    assert f"{SETTINGS['MHQ_AGENT_IMAGE']} run" in agent
    assert "--read-only" in agent
    assert "--cap-drop ALL" in agent
    assert "--log-driver awslogs" in agent
    assert f"awslogs-group={SETTINGS['MHQ_LOG_GROUP']}" in agent
    assert "awslogs-stream=agent" in agent
    assert "awslogs-stream=postgres" in postgres
    assert "--volume /var/lib/mhq/postgres:/var/lib/postgresql/data" in postgres
    assert "-c shared_buffers=128MB" in postgres
    assert "-c max_connections=20" in postgres
    assert "--publish" not in postgres


def test_second_boot_changes_nothing(host: Host) -> None:
    host.run(SCRIPT_PATH)
    first = host.snapshot()

    host.run(SCRIPT_PATH)
    second = host.snapshot()

    assert second == first
    assert host.commands() == [
        "rpm -q docker",
        "systemctl enable --now docker.service",
        "systemctl enable mhq-postgres.service",
        "systemctl start mhq-postgres.service",
        "systemctl enable mhq-agent.service",
        "systemctl start mhq-agent.service",
    ]


def test_new_image_restarts_agent_only(host: Host) -> None:
    host.run(SCRIPT_PATH)
    password = host.read("etc/mhq/postgres-password")

    host.run(
        SCRIPT_PATH,
        MHQ_AGENT_IMAGE="123456789012.dkr.ecr.eu-west-1.amazonaws.com/agent:9b02",
    )

    commands = host.commands()
    assert "systemctl daemon-reload" in commands
    assert "systemctl restart mhq-agent.service" in commands
    assert "systemctl start mhq-postgres.service" in commands
    assert "agent:9b02 run" in host.read("etc/systemd/system/mhq-agent.service")
    assert host.read("etc/mhq/postgres-password") == password


def test_swap_resized_when_setting_changes(host: Host) -> None:
    host.run(SCRIPT_PATH)

    host.run(SCRIPT_PATH, MHQ_SWAP_MB="512")

    assert (host.root / "swapfile").stat().st_size == 512 * 1024 * 1024
    assert f"swapoff {host.root}/swapfile" in host.commands()
    assert host.read("etc/fstab").count("/swapfile none swap") == 1


def test_pull_helper_logs_in_to_ecr(host: Host) -> None:
    host.run(SCRIPT_PATH)
    helper = host.root / "usr/local/sbin/mhq-agent-pull"

    host.run(helper)

    registry = SETTINGS["MHQ_AGENT_IMAGE"].split("/")[0]
    commands = host.commands()
    # The two sides of the login pipe run at once, so their log lines may swap.
    assert sorted(commands[:2]) == [
        "aws ecr get-login-password --region eu-west-1",
        f"docker login --username AWS --password-stdin {registry}",
    ]
    assert commands[2:] == [f"docker pull {SETTINGS['MHQ_AGENT_IMAGE']}"]


def test_pull_helper_skips_login_elsewhere(host: Host) -> None:
    image = "ghcr.io/example/mhq-agent:1.4.0"
    host.run(SCRIPT_PATH, MHQ_AGENT_IMAGE=image)
    helper = host.root / "usr/local/sbin/mhq-agent-pull"

    host.run(helper)

    assert host.commands() == [f"docker pull {image}"]


def test_pull_helper_shellcheck_clean(host: Host) -> None:
    host.run(SCRIPT_PATH)
    helper = host.root / "usr/local/sbin/mhq-agent-pull"

    result = subprocess.run(
        [tool("shellcheck"), str(helper)], capture_output=True, text=True, check=False
    )

    assert os.access(helper, os.X_OK)
    assert result.returncode == 0, result.stdout
