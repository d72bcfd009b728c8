"""AES-GCM key ring and constant-time comparison."""

from __future__ import annotations

import secrets

import pytest

from shared.security.crypto import DecryptionError, KeyRing, constant_time_equals


def ring(*kids: str, active: str | None = None, keys: dict[str, bytes] | None = None) -> KeyRing:
    material = keys or {kid: secrets.token_bytes(32) for kid in kids}
    return KeyRing(material, active or kids[-1])


def test_encrypt_then_decrypt_gives_the_plaintext_back() -> None:
    keys = ring("k1")
    token = keys.encrypt(b"JBSWY3DPEHPK3PXP", b"twofactor-42")
    assert b"JBSWY3DPEHPK3PXP" not in token.encode()
    assert keys.decrypt(token, b"twofactor-42") == b"JBSWY3DPEHPK3PXP"


def test_same_plaintext_encrypts_differently_each_time() -> None:
    keys = ring("k1")
    assert keys.encrypt(b"s", b"a") != keys.encrypt(b"s", b"a")


def test_old_key_still_decrypts_after_rotation() -> None:
    material = {"old": secrets.token_bytes(32)}
    before = KeyRing(material, "old")
    token = before.encrypt(b"secret", b"acct")
    after = KeyRing({**material, "new": secrets.token_bytes(32)}, "new")
    assert after.decrypt(token, b"acct") == b"secret"
    assert after.key_id_of(after.encrypt(b"secret", b"acct")) == "new"
    assert after.key_id_of(token) == "old"


def test_ciphertext_bound_to_its_owner() -> None:
    keys = ring("k1")
    token = keys.encrypt(b"secret", b"twofactor-1")
    with pytest.raises(DecryptionError):
        keys.decrypt(token, b"twofactor-2")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # tampered tag
        lambda t: "v2" + t[2:],  # unknown format version
        lambda t: t.replace(".k1.", ".nope."),  # unknown key id
        lambda t: "garbage",  # not a ciphertext at all
        lambda t: t + ".extra",  # too many parts
        lambda t: t.rsplit(".", 1)[0] + ".***",  # invalid base64
    ],
)
def test_tampered_or_foreign_ciphertext_is_refused(mangle: object) -> None:
    keys = ring("k1")
    token = keys.encrypt(b"secret", b"acct")
    with pytest.raises(DecryptionError):
        keys.decrypt(mangle(token), b"acct")  # type: ignore[operator]


def test_key_ring_refuses_bad_keys() -> None:
    with pytest.raises(ValueError):
        KeyRing({"k": b"short"}, "k")
    with pytest.raises(ValueError):
        KeyRing({"k": secrets.token_bytes(32)}, "missing")
    with pytest.raises(ValueError):
        KeyRing({"a.b": secrets.token_bytes(32)}, "a.b")


def test_constant_time_equals() -> None:
    assert constant_time_equals("123456", "123456")
    assert not constant_time_equals("123456", "123457")
    assert not constant_time_equals(b"abc", b"abcd")
    assert constant_time_equals("é", "é".encode())
