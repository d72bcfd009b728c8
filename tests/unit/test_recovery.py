"""Recovery codes: generation, normalisation, peppered argon2id hashing, matching."""

from __future__ import annotations

import math
import re
import secrets

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.security.recovery import ALPHABET, CODE_LENGTH, RecoveryCodeHasher, new_codes, normalize

DISPLAY_FORM = re.compile(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}")
CODE = "7k3m-9qxa-c2vt-h8pw"


@pytest.fixture
def hasher() -> RecoveryCodeHasher:
    return RecoveryCodeHasher(secrets.token_bytes(32))


def test_six_distinct_codes_by_default() -> None:
    codes = new_codes()
    assert len(codes) == 6
    assert len(set(codes)) == 6


def test_count_is_honoured() -> None:
    assert len(new_codes(10)) == 10
    with pytest.raises(ValueError, match="count"):
        new_codes(0)


def test_codes_have_at_least_64_bits_of_entropy() -> None:
    assert len(set(ALPHABET)) == len(ALPHABET) == 32
    bits = CODE_LENGTH * math.log2(len(ALPHABET))
    assert bits >= 64
    assert bits == 80


def test_alphabet_has_no_confusable_symbols() -> None:
    assert not set(ALPHABET) & set("ilou")
    assert ALPHABET.islower()


def test_codes_are_grouped_lowercase_over_the_alphabet() -> None:
    for code in new_codes(50):
        assert DISPLAY_FORM.fullmatch(code), code
        assert set(code.replace("-", "")) <= set(ALPHABET)


def test_codes_differ_between_calls() -> None:
    assert not set(new_codes()) & set(new_codes())


def test_every_symbol_of_the_alphabet_is_used() -> None:
    seen = set("".join(new_codes(100)).replace("-", ""))
    assert seen == set(ALPHABET)  # 1,600 draws miss a symbol with probability ~1e-20


@pytest.mark.parametrize(
    "typed",
    [
        "7k3m-9qxa-c2vt-h8pw",
        "7K3M-9QXA-C2VT-H8PW",
        "7k3m9qxac2vth8pw",
        "7K3M9QXAC2VTH8PW",
        "  7k3m 9qxa c2vt h8pw  ",
        "7k3m - 9qxa - c2vt - h8pw",
        "7k3m--9qxa-c2vt-h8pw-",
        "\t7k3m-9qxa-c2vt-h8pw\n",
    ],
)
def test_normalize_ignores_case_dashes_and_spaces(typed: str) -> None:
    assert normalize(typed) == "7k3m9qxac2vth8pw"


def test_normalize_reads_confusables_as_digits() -> None:
    assert normalize("1111-0000-2222-3333") == "1111000022223333"
    assert normalize("iIlL-oOoO-2222-3333") == "1111000022223333"


BAD_CODES = [
    "",
    " ",
    "-",
    "7k3m-9qxa-c2vt-h8p",  # 15 symbols
    "7k3m-9qxa-c2vt-h8pwx",  # 17 symbols
    "7k3m-9qxa-c2vt",  # 12 symbols
    "7k3m-9qxa-c2vt-h8pu",  # 'u' is not in the alphabet
    "7k3m-9qxa-c2vt-h8p!",
    "7k3m_9qxa_c2vt_h8pw",  # underscores are not separators
    "7k3m.9qxa.c2vt.h8pw",
    "7k3m-9qxa-c2vt-h8pé",  # non-ASCII letter
    "7\u212a3m-9qxa-c2vt-h8pw",  # KELVIN SIGN lower-cases to 'k'; still refused
    "\uff17k3m-9qxa-c2vt-h8pw",  # fullwidth digit seven
    "7k3m-9qxa-c2vt-h8pw\u200b",  # zero-width space
    "7k3m\u00a09qxa\u00a0c2vt\u00a0h8pw",  # non-breaking spaces
    "7k3m-9qxa-c2vt-h8pw\x00",
    "\ud800" * 16,  # lone surrogates
    "٧٣٩٢-٨٨٨٨-٢٢٢٢-٣٣٣٣",  # Arabic-Indic digits
    "7k3m-9qxa-c2vt-h8pw" * 1000,
    "' OR 1=1 --",
    "None",
]


@pytest.mark.parametrize("code", BAD_CODES)
def test_normalize_refuses_wrong_length_characters_and_unicode(code: str) -> None:
    assert normalize(code) is None


@given(st.text())
def test_normalize_never_raises_and_only_returns_the_compact_form(code: str) -> None:
    compact = normalize(code)
    assert compact is None or (len(compact) == CODE_LENGTH and set(compact) <= set(ALPHABET))


@pytest.mark.parametrize("code", BAD_CODES)
def test_malformed_codes_never_verify_or_match(hasher: RecoveryCodeHasher, code: str) -> None:
    stored = hasher.hash(CODE)
    assert hasher.verify(stored, code) is False
    assert hasher.match([stored], code) is None


def test_pepper_must_be_at_least_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        RecoveryCodeHasher(secrets.token_bytes(31))
    RecoveryCodeHasher(secrets.token_bytes(32))


def test_hash_is_argon2id_and_never_contains_the_code(hasher: RecoveryCodeHasher) -> None:
    code = new_codes(1)[0]
    stored = hasher.hash(code)
    assert stored.startswith("$argon2id$")
    compact = code.replace("-", "")
    for form in (code, compact, code.upper(), compact.upper()):
        assert form not in stored


def test_hash_refuses_a_malformed_code(hasher: RecoveryCodeHasher) -> None:
    with pytest.raises(ValueError, match="not a recovery code"):
        hasher.hash("not-a-code")


def test_same_code_hashes_differently_each_time(hasher: RecoveryCodeHasher) -> None:
    assert hasher.hash(CODE) != hasher.hash(CODE)


def test_right_code_verifies_in_any_spelling(hasher: RecoveryCodeHasher) -> None:
    stored = hasher.hash(CODE)
    assert hasher.verify(stored, CODE)
    assert hasher.verify(stored, CODE.upper().replace("-", " "))


def test_wrong_code_does_not_verify(hasher: RecoveryCodeHasher) -> None:
    stored = hasher.hash(CODE)
    assert not hasher.verify(stored, "7k3m-9qxa-c2vt-h8px")


def test_different_pepper_does_not_verify(hasher: RecoveryCodeHasher) -> None:
    stored = hasher.hash(CODE)
    other = RecoveryCodeHasher(secrets.token_bytes(32))
    assert not other.verify(stored, CODE)


def test_pepper_is_applied_before_argon2(hasher: RecoveryCodeHasher) -> None:
    # Without the pepper, the stored hash is not a plain argon2id of the code.
    stored = hasher.hash(CODE)
    plain = RecoveryCodeHasher(b"\x00" * 32)
    assert not plain.verify(stored, CODE)


@pytest.mark.parametrize(
    "garbage",
    ["", "garbage", "$argon2id$", "$argon2id$v=19$m=4096,t=1,p=1$AAAA$BBBB", "é", "\ud800"],
)
def test_garbage_stored_hash_is_false_not_an_error(
    hasher: RecoveryCodeHasher, garbage: str
) -> None:
    assert hasher.verify(garbage, CODE) is False
    assert hasher.match([garbage], CODE) is None


def test_match_finds_the_right_index(hasher: RecoveryCodeHasher) -> None:
    codes = new_codes()
    stored = [hasher.hash(code) for code in codes]
    for index, code in enumerate(codes):
        assert hasher.match(stored, code) == index


def test_spent_codes_are_skipped(hasher: RecoveryCodeHasher) -> None:
    codes = new_codes(4)
    stored: list[str | None] = [hasher.hash(code) for code in codes]
    stored[1] = None
    assert hasher.match(stored, codes[1]) is None
    assert hasher.match(stored, codes[2]) == 2


def test_unknown_code_matches_nothing(hasher: RecoveryCodeHasher) -> None:
    stored = [hasher.hash(code) for code in new_codes()]
    assert hasher.match(stored, new_codes(1)[0]) is None
    assert hasher.match([], CODE) is None
    assert hasher.match([None, None], CODE) is None


def test_match_checks_every_entry(
    hasher: RecoveryCodeHasher, monkeypatch: pytest.MonkeyPatch
) -> None:
    codes = new_codes(5)
    stored: list[str | None] = [hasher.hash(code) for code in codes]
    stored[3] = None
    calls: list[str] = []
    verify = hasher._verify

    def counting(stored_hash: str, peppered: bytes) -> bool:
        calls.append(stored_hash)
        return verify(stored_hash, peppered)

    monkeypatch.setattr(hasher, "_verify", counting)
    assert hasher.match(stored, codes[0]) == 0
    assert len(calls) == 5  # no early exit after index 0, and the spent entry still costs


def test_small_parameters_are_the_defaults_and_can_be_raised() -> None:
    pepper = secrets.token_bytes(32)
    assert "$m=4096,t=1,p=1$" in RecoveryCodeHasher(pepper).hash(CODE)
    stronger = RecoveryCodeHasher(pepper, time_cost=2, memory_cost_kib=8192, parallelism=2)
    stored = stronger.hash(CODE)
    assert "$m=8192,t=2,p=2$" in stored
    assert RecoveryCodeHasher(pepper).verify(stored, CODE)  # parameters live in the hash
