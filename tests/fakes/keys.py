"""Keys for the reference MHQ receiver: an RSA key pair and a signing secret."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class ReceiverKeys:
    """Keys of one receiver: MHQ keeps the private key, the agent gets the rest.

    The private key and the client secret are left out of repr(), so a failing
    test does not print them.
    """

    private_pem: bytes = field(repr=False)
    public_pem: str
    client_secret: str = field(repr=False)
    client_id: str


def make_rsa_keypair(bits: int = 2048) -> tuple[bytes, str]:
    """Return (private key as PKCS#8 PEM, public key as SubjectPublicKeyInfo PEM)."""
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM,
        serialization.PublicFormat.SubjectPublicKeyInfo,
    )
    return private_pem, public_pem.decode("ascii")


def make_client_secret() -> str:
    """Return a Standard Webhooks secret: whsec_ and base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def make_receiver_keys(
    client_id: str = "client-test", bits: int = 2048
) -> ReceiverKeys:
    """Return a fresh key pair and client secret for one receiver."""
    private_pem, public_pem = make_rsa_keypair(bits)
    return ReceiverKeys(private_pem, public_pem, make_client_secret(), client_id)
