"""User data: infra/user_data.sh with the stack's settings, run at every boot."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import aws_ec2 as ec2

SCRIPT_PATH = Path(__file__).with_name("user_data.sh")

# cloud-init runs user data scripts once per instance by default. Running them at
# every boot (the cloud_final_modules override) lets a stop and start, which is how
# CloudFormation applies changed user data, apply the new settings without replacing
# the instance and its Postgres data.
CLOUD_CONFIG = """#cloud-config
cloud_final_modules:
  - [scripts-user, always]
"""


def render_script(settings: Mapping[str, str]) -> str:
    """Return the boot script with ``export NAME='value'`` lines after its shebang.

    Values are CDK tokens or strings that the deploy config already limited to
    characters that need no quoting beyond single quotes.
    """
    shebang, body = SCRIPT_PATH.read_text(encoding="utf-8").split("\n", 1)
    exports = "".join(f"export {name}='{value}'\n" for name, value in settings.items())
    return f"{shebang}\n{exports}{body}"


def build_user_data(settings: Mapping[str, str]) -> ec2.UserData:
    """Return MIME multipart user data: the cloud-config part, then the script."""
    user_data = ec2.MultipartUserData()
    user_data.add_part(
        ec2.MultipartBody.from_raw_body(
            content_type='text/cloud-config; charset="utf-8"', body=CLOUD_CONFIG
        )
    )
    # A plain-text part: base64 would grow the script by a third towards the 16 KiB
    # limit that EC2 sets on user data.
    user_data.add_part(
        ec2.MultipartBody.from_raw_body(
            content_type='text/x-shellscript; charset="utf-8"',
            body=render_script(settings),
        )
    )
    return user_data
