"""Fresh signing keys for every JWT algorithm the contract allows."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

# The HS256 key the tests mint service tokens with (and the stand-ins verify).
TEST_JWT_SECRET = "test-secret-" + "0123456789abcdef0123456789abcdef"


def private_key_pem(algorithm: str) -> str:
    if algorithm == "RS256":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm == "ES256":
        key = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "EdDSA":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(algorithm)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
