"""JWE checked with joserfc, and Standard Webhooks signatures checked by hand.

joserfc is a JOSE implementation independent of jwcrypto, which the agent uses, so a
round trip here does not only test a library against itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc import jwe
from joserfc.errors import DecodeError
from joserfc.jwk import RSAKey
from standardwebhooks import Webhook

from agent.push.crypto import Encryptor, Signer, load_public_key
from tests.fakes.keys import ReceiverKeys, make_client_secret, make_rsa_keypair

ALGORITHMS = ["RSA-OAEP-256", "A256GCM", "DEF"]
ENVELOPE = json.dumps(
    {
        "schema_version": 1,
        "type": "sync.batch",
        "message_id": "batch-0001",
        "data": {"provider": "gitlab", "records": {"users": [{"id": "1"}]}},
    }
).encode("utf-8")


def b64url_json(segment: str) -> dict[str, object]:
    padded = segment + "=" * (-len(segment) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def decrypt(token: bytes, keys: ReceiverKeys) -> jwe.CompactEncryption:
    private_key = RSAKey.import_key(keys.private_pem)
    return jwe.decrypt_compact(token, private_key, algorithms=ALGORITHMS)


# -- Encryptor -----------------------------------------------------------------------


def test_jwe_decrypts_with_joserfc(receiver_keys: ReceiverKeys) -> None:
    token = Encryptor(receiver_keys.public_pem).encrypt(ENVELOPE)

    assert decrypt(token, receiver_keys).plaintext == ENVELOPE


def test_jwe_protected_header(receiver_keys: ReceiverKeys) -> None:
    thumbprint = RSAKey.import_key(receiver_keys.public_pem).thumbprint()

    token = Encryptor(receiver_keys.public_pem).encrypt(ENVELOPE)

    assert decrypt(token, receiver_keys).protected == {
        "alg": "RSA-OAEP-256",
        "enc": "A256GCM",
        "zip": "DEF",
        "cty": "application/json",
        "kid": thumbprint,
    }


def test_jwe_compact_segments(receiver_keys: ReceiverKeys) -> None:
    token = Encryptor(receiver_keys.public_pem).encrypt(ENVELOPE).decode("ascii")
    segments = token.split(".")

    assert len(segments) == 5
    assert all(segments)
    assert set(b64url_json(segments[0])) == {"alg", "enc", "zip", "cty", "kid"}


def test_kid_is_rfc7638_thumbprint(receiver_keys: ReceiverKeys) -> None:
    # RFC 7638: SHA-256 over the required members e, kty, n in lexicographic order.
    jwk_members = RSAKey.import_key(receiver_keys.public_pem).as_dict()
    canonical = json.dumps(
        {name: jwk_members[name] for name in ("e", "kty", "n")},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    by_hand = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    assert Encryptor(receiver_keys.public_pem).kid == by_hand


def test_jwe_is_compressed(receiver_keys: ReceiverKeys) -> None:
    plaintext = json.dumps([{"id": str(n), "state": "merged"} for n in range(5000)])
    data = plaintext.encode("utf-8")

    token = Encryptor(receiver_keys.public_pem).encrypt(data)
    ciphertext = token.split(b".")[3]

    assert len(ciphertext) < len(data) // 4
    assert decrypt(token, receiver_keys).plaintext == data


def test_jwe_compression_is_raw_deflate(receiver_keys: ReceiverKeys) -> None:
    # RFC 7516 "DEF" is raw DEFLATE (RFC 1951) without zlib or gzip framing, so a
    # decompressor with wbits=-15 must accept what comes out of the AES-GCM layer.
    token = Encryptor(receiver_keys.public_pem).encrypt(ENVELOPE).decode("ascii")
    header, wrapped, iv, ciphertext, tag = (
        base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        for part in token.split(".")
    )
    private_key = load_pem_private_key(receiver_keys.private_pem, password=None)
    assert isinstance(private_key, rsa.RSAPrivateKey)
    oaep = padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None
    )
    content_key = private_key.decrypt(wrapped, oaep)
    aad = token.split(".")[0].encode("ascii")
    compressed = AESGCM(content_key).decrypt(iv, ciphertext + tag, aad)

    assert zlib.decompress(compressed, wbits=-15) == ENVELOPE
    assert json.loads(header)["zip"] == "DEF"


def test_jwe_differs_each_time(receiver_keys: ReceiverKeys) -> None:
    encryptor = Encryptor(receiver_keys.public_pem)

    assert encryptor.encrypt(ENVELOPE) != encryptor.encrypt(ENVELOPE)


def test_jwe_wrong_key_fails(receiver_keys: ReceiverKeys) -> None:
    other_private, _ = make_rsa_keypair(2048)
    token = Encryptor(receiver_keys.public_pem).encrypt(ENVELOPE)

    with pytest.raises(DecodeError):
        jwe.decrypt_compact(
            token, RSAKey.import_key(other_private), algorithms=ALGORITHMS
        )


def test_encryptor_rejects_small_key() -> None:
    _, public_pem = make_rsa_keypair(1024)

    with pytest.raises(ValueError) as caught:
        Encryptor(public_pem)

    assert "1024" in str(caught.value)


def test_load_public_key_escaped_newlines(receiver_keys: ReceiverKeys) -> None:
    one_line = receiver_keys.public_pem.strip().replace("\n", "\\n")

    key = load_public_key(one_line)

    assert key.thumbprint() == RSAKey.import_key(receiver_keys.public_pem).thumbprint()


# -- Signer --------------------------------------------------------------------------


def hand_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def signed_headers(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    stamp = str(timestamp)
    return {
        "webhook-id": "batch-0001",
        "webhook-timestamp": stamp,
        "webhook-signature": hand_signature(secret, "batch-0001", stamp, body),
    }


@pytest.fixture
def secret() -> str:
    return make_client_secret()


def test_headers_names(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "batch-0001"


def test_headers_timestamp_now(secret: str) -> None:
    before = int(time.time())

    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())


def test_headers_verify_standardwebhooks(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    parsed = Webhook(secret).verify(ENVELOPE, headers)

    assert parsed == json.loads(ENVELOPE)


def test_headers_match_hand_hmac(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    expected = hand_signature(
        secret, "batch-0001", headers["webhook-timestamp"], ENVELOPE
    )

    assert headers["webhook-signature"] == expected


def test_headers_sign_binary_body(secret: str) -> None:
    body = b"eyJhbGciOi.\xff\x00binary"

    headers = Signer(secret).headers("batch-0002", body)

    assert Webhook(secret).verify(body, headers, json_parse=False) is None


def test_verify_accepts_valid(secret: str) -> None:
    headers = signed_headers(secret, ENVELOPE, int(time.time()))

    assert Signer(secret).verify(ENVELOPE, headers) is True


def test_verify_accepts_mixed_case_names(secret: str) -> None:
    headers = signed_headers(secret, ENVELOPE, int(time.time()))
    title_case = {name.title(): value for name, value in headers.items()}

    assert Signer(secret).verify(ENVELOPE, title_case) is True


def test_verify_rejects_tampered_body(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    assert Signer(secret).verify(ENVELOPE + b" ", headers) is False


def test_verify_rejects_other_id(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)
    headers["webhook-id"] = "batch-0002"

    assert Signer(secret).verify(ENVELOPE, headers) is False


def test_verify_rejects_wrong_secret(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)

    assert Signer(make_client_secret()).verify(ENVELOPE, headers) is False


@pytest.mark.parametrize(
    "offset_s",
    [
        pytest.param(-600, id="ten-minutes-old"),
        pytest.param(-24 * 3600, id="a-day-old"),
        pytest.param(600, id="ten-minutes-ahead"),
    ],
)
def test_verify_rejects_stale_timestamp(secret: str, offset_s: int) -> None:
    headers = signed_headers(secret, ENVELOPE, int(time.time()) + offset_s)

    assert Signer(secret).verify(ENVELOPE, headers) is False


@pytest.mark.parametrize(
    "missing", ["webhook-id", "webhook-timestamp", "webhook-signature"]
)
def test_verify_rejects_missing_header(secret: str, missing: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)
    del headers[missing]

    assert Signer(secret).verify(ENVELOPE, headers) is False


def test_verify_rejects_garbage_timestamp(secret: str) -> None:
    headers = Signer(secret).headers("batch-0001", ENVELOPE)
    headers["webhook-timestamp"] = "yesterday"

    assert Signer(secret).verify(ENVELOPE, headers) is False
