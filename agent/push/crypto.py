"""Encryption to MHQ's public key (JWE) and Standard Webhooks signatures."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwcrypto import jwe, jwk
from standardwebhooks import Webhook, WebhookVerificationError

MIN_RSA_BITS = 2048


@lru_cache(maxsize=4)
def load_public_key(pem: str) -> jwk.JWK:
    """Parse MHQ's public key, rejecting anything but RSA of 2048 bits or more.

    Raises ValueError with a message that names what was found and what is expected.
    """
    text = pem.replace("\\n", "\n").strip()
    try:
        key = serialization.load_pem_public_key(text.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(
            "is not a PEM public key (expected '-----BEGIN PUBLIC KEY-----', "
            "as MHQ's admin page shows it)"
        ) from exc
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError(f"is a {type(key).__name__}, expected an RSA public key")
    if key.key_size < MIN_RSA_BITS:
        raise ValueError(
            f"is RSA of {key.key_size} bits, expected {MIN_RSA_BITS} bits or more"
        )
    return jwk.JWK.from_pyca(key)


class Encryptor:
    """Wraps plaintext in a compact JWE (RSA-OAEP-256, A256GCM, DEF) for MHQ."""

    def __init__(self, public_key_pem: str) -> None:
        self._key = load_public_key(public_key_pem)
        self.kid = self._key.thumbprint()
        self._header = json.dumps(
            {
                "alg": "RSA-OAEP-256",
                "enc": "A256GCM",
                "zip": "DEF",
                "cty": "application/json",
                "kid": self.kid,
            }
        )

    def encrypt(self, plaintext: bytes) -> bytes:
        token = jwe.JWE(plaintext, protected=self._header)
        token.add_recipient(self._key)
        compact: str = token.serialize(compact=True)
        return compact.encode("ascii")


class Signer:
    """Signs and verifies messages with the client secret, per Standard Webhooks."""

    def __init__(self, client_secret: str) -> None:
        self._webhook = Webhook(client_secret)

    def headers(self, message_id: str, body: bytes) -> dict[str, str]:
        now = int(time.time())
        signature = self._webhook.sign(
            message_id, datetime.fromtimestamp(now, tz=UTC), body
        )
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(now),
            "webhook-signature": signature,
        }

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Return True when ``headers`` carry a valid, fresh signature of ``body``."""
        try:
            self._webhook.verify(body, dict(headers), json_parse=False)
        except WebhookVerificationError:
            return False
        return True
