"""Password hashing and the NIST SP 800-63B acceptance policy."""

from __future__ import annotations

import secrets
import unicodedata
from importlib import resources

import argon2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.security.passwords import MAX_LENGTH, MIN_LENGTH, PasswordHasher, check_password


@pytest.fixture(scope="module")
def hasher() -> PasswordHasher:
    # Small parameters keep the suite fast; one test below uses the real defaults.
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


def random_password() -> str:
    return secrets.token_urlsafe(16)


# Hashing -------------------------------------------------------------------------------


def test_hash_then_verify(hasher: PasswordHasher) -> None:
    password = random_password()
    stored = hasher.hash(password)
    assert stored.startswith("$argon2id$")
    assert password not in stored
    assert hasher.verify(stored, password)


def test_default_parameters_are_argon2_cffis() -> None:
    hasher = PasswordHasher()
    password = random_password()
    stored = hasher.hash(password)
    expected = (
        f"$m={argon2.DEFAULT_MEMORY_COST},t={argon2.DEFAULT_TIME_COST},"
        f"p={argon2.DEFAULT_PARALLELISM}$"
    )
    assert expected in stored
    assert hasher.verify(stored, password)
    assert not hasher.needs_rehash(stored)


def test_wrong_password_is_false(hasher: PasswordHasher) -> None:
    stored = hasher.hash("correct horse battery staple")
    assert not hasher.verify(stored, "correct horse battery stapl")
    assert not hasher.verify(stored, "Correct horse battery staple")
    assert not hasher.verify(stored, "")


def test_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    assert hasher.hash("correct horse battery staple") != hasher.hash(
        "correct horse battery staple"
    )


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=8,t=1,p=1$AAAA$BBBB",
        "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",  # bcrypt
        "é",
        "\ud800",
    ],
)
def test_garbage_stored_hash_is_false_not_an_error(hasher: PasswordHasher, garbage: str) -> None:
    assert hasher.verify(garbage, "correct horse battery staple") is False
    assert hasher.needs_rehash(garbage) is True


@pytest.mark.parametrize("password", ["\ud800", "a" * 1_000_000, "\x00" * 10])
def test_odd_passwords_never_raise_in_verify(hasher: PasswordHasher, password: str) -> None:
    stored = hasher.hash("correct horse battery staple")
    assert hasher.verify(stored, password) is False
    hasher.dummy_verify(password)


def test_password_is_normalised_before_hashing(hasher: PasswordHasher) -> None:
    composed = "Zoë-pässwörd"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    assert hasher.verify(hasher.hash(composed), decomposed)
    assert hasher.verify(hasher.hash("\uff30\uff41\uff53\uff53"), "Pass")  # full-width


def test_needs_rehash_when_parameters_change(hasher: PasswordHasher) -> None:
    stored = hasher.hash(random_password())
    assert not hasher.needs_rehash(stored)
    assert PasswordHasher(time_cost=2, memory_cost=8, parallelism=1).needs_rehash(stored)


def test_dummy_verify_runs_a_real_argon2_verification(
    hasher: PasswordHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    real = argon2.PasswordHasher.verify

    def spy(self: argon2.PasswordHasher, stored: str | bytes, password: str | bytes) -> bool:
        calls.append(stored if isinstance(stored, str) else stored.decode())
        return real(self, stored, password)

    monkeypatch.setattr(argon2.PasswordHasher, "verify", spy)
    hasher.dummy_verify("correct horse battery staple")
    assert len(calls) == 1
    assert calls[0].startswith("$argon2id$v=19$m=8,t=1,p=1$")  # same cost as a real one


# Policy --------------------------------------------------------------------------------


def test_limits_are_nists() -> None:
    assert (MIN_LENGTH, MAX_LENGTH) == (8, 128)


def test_seven_characters_are_too_short() -> None:
    assert check_password("xk4#qz!") == ["must be at least 8 characters"]


def test_eight_characters_are_enough() -> None:
    assert check_password("xk4#qz!w") == []


def test_128_characters_are_allowed() -> None:
    assert check_password("x" + secrets.token_hex(64)[:127]) == []


def test_129_characters_are_too_long() -> None:
    assert check_password("x" + secrets.token_hex(64)) == ["must be at most 128 characters"]


def test_huge_input_is_too_long_without_being_processed() -> None:
    assert check_password("x" * 10_000_000) == ["must be at most 128 characters"]


@pytest.mark.parametrize(
    "password",
    [
        "password",
        "PASSWORD",
        "Password1",
        "12345678",
        "123456789",
        "qwerty123",
        "QwErTy123",
        "iloveyou",
        "11111111",
        "sunshine",
        "P@ssw0rd",
        "trustno1",
        "Welcome123",
        "football1",
        "1q2w3e4r",
    ],
)
def test_common_passwords_are_refused_in_any_case(password: str) -> None:
    assert check_password(password) == ["is too common: it appears in lists of breached passwords"]


def test_username_is_refused_as_the_password() -> None:
    problems = check_password("Alice.Liddell", username="alice.liddell")
    assert problems == ["must not be the same as your username"]


@pytest.mark.parametrize("password", ["alice.liddell@example.com", "ALICE.LIDDELL"])
def test_email_or_its_local_part_is_refused_as_the_password(password: str) -> None:
    problems = check_password(password, email="Alice.Liddell@Example.com")
    assert problems == ["must not be the same as your email address"]


def test_password_containing_the_username_is_allowed() -> None:
    # NIST asks for equality checks only; "alice" inside a long passphrase is fine.
    assert check_password("alice in wonderland 1865", username="alice") == []


def test_empty_username_and_email_are_ignored() -> None:
    assert check_password("xk4#qz!w", username="", email="") == []
    assert check_password("", email="no-at-sign") == ["must be at least 8 characters"]


@pytest.mark.parametrize(
    "password",
    [
        "correct horse battery staple",
        "пароль-надёжный-2026",
        "🔐🦄🌈🍕🚲🎻🐙🌋",
        "密码是一个很长的句子",
        "Zoë Müller's passphrase",
    ],
)
def test_unicode_passwords_are_accepted(password: str, hasher: PasswordHasher) -> None:
    assert check_password(password) == []
    assert hasher.verify(hasher.hash(password), password)


def test_length_counts_code_points_after_nfkc() -> None:
    ligatures = "\ufb00" * 4  # 'ﬀ' is one code point that NFKC turns into "ff"
    assert len(ligatures) == 4
    assert check_password(ligatures) == []
    decomposed = "e\u0301" * 4  # 8 code points that NFKC composes into 4 'é'
    assert len(decomposed) == 8
    assert check_password(decomposed) == ["must be at least 8 characters"]


def test_emoji_count_as_one_character_each() -> None:
    assert check_password("🔐" * 7) == ["must be at least 8 characters"]
    assert check_password("🔐" * 8) == []


def test_nfkc_applies_to_the_blocklist_too() -> None:
    fullwidth = "\uff50\uff41\uff53\uff53\uff57\uff4f\uff52\uff44"  # "password", full width
    assert check_password(fullwidth) == ["is too common: it appears in lists of breached passwords"]


def test_lone_surrogates_are_refused() -> None:
    assert check_password("abc\ud800defgh") == ["contains characters that are not valid text"]


@given(st.text(), st.text(max_size=20), st.text(max_size=20))
def test_check_password_never_raises(password: str, username: str, email: str) -> None:
    assert all(
        isinstance(problem, str)
        for problem in check_password(password, username=username, email=email)
    )


# The bundled list ----------------------------------------------------------------------


def read_list() -> list[str]:
    listing = resources.files("shared") / "data" / "common-passwords.txt"
    return listing.read_text(encoding="utf-8").splitlines()


def test_common_password_list_is_large_lowercase_and_long_enough() -> None:
    entries = read_list()
    assert len(entries) >= 1000
    assert len(set(entries)) == len(entries)
    for entry in entries:
        assert entry == entry.strip() == entry.lower(), entry
        assert len(entry) >= MIN_LENGTH, entry


def test_every_listed_password_is_refused() -> None:
    for entry in read_list():
        assert "is too common: it appears in lists of breached passwords" in check_password(entry)
