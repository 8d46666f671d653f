"""The text encoder: trained vocabulary, truncation, digest and robustness to any string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model.encoder import PAD_ID, UNK_ID, TextEncoder
from model.errors import ModelError

TEXTS = ["Oil prices rose 3.5 pct on Monday", "The company said profits rose", "oil and gas"]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder.train(TEXTS, min_frequency=1, max_tokens=8)


def test_known_words_map_to_their_own_ids_case_insensitively(encoder: TextEncoder) -> None:
    [upper, lower] = encoder.encode(["OIL Rose", "oil rose"])
    assert upper == lower
    assert UNK_ID not in upper


def test_digits_are_normalised_so_numbers_share_a_shape(encoder: TextEncoder) -> None:
    [first, second] = encoder.encode(["3.5 pct", "7.1 pct"])
    assert first == second
    assert UNK_ID not in first


def test_unknown_words_become_unk(encoder: TextEncoder) -> None:
    assert encoder.encode(["zebra"]) == [[UNK_ID]]


def test_long_text_keeps_its_first_max_tokens(encoder: TextEncoder) -> None:
    words = [
        "oil",
        "prices",
        "rose",
        "on",
        "monday",
        "the",
        "company",
        "said",
        "profits",
        "rose",
        "and",
        "gas",
    ]
    [ids] = encoder.encode([" ".join(words)])
    assert ids == encoder.encode([" ".join(words[:8])])[0]
    assert len(ids) == 8


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\x00", "a\ud800b", "\udfff", "🛢️" * 3])
def test_empty_or_strange_text_encodes_to_at_least_one_valid_id(
    encoder: TextEncoder, text: str
) -> None:
    [ids] = encoder.encode([text])
    assert 1 <= len(ids) <= encoder.max_tokens
    assert all(PAD_ID < i < encoder.vocab_size for i in ids)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(), max_size=5))
def test_any_strings_encode_without_error(texts: list[str]) -> None:
    encoder = _shared()
    encoded = encoder.encode(texts)
    assert len(encoded) == len(texts)
    assert all(1 <= len(ids) <= encoder.max_tokens for ids in encoded)


def test_json_round_trip_keeps_encoding_and_digest(encoder: TextEncoder) -> None:
    again = TextEncoder.from_json(encoder.to_json())
    assert again.digest == encoder.digest
    assert again.encode(TEXTS) == encoder.encode(TEXTS)


def test_digest_changes_with_the_truncation_length(encoder: TextEncoder) -> None:
    other = TextEncoder(encoder.tokenizer, max_tokens=9)
    assert other.digest != encoder.digest


def test_garbage_json_is_a_model_error() -> None:
    with pytest.raises(ModelError):
        TextEncoder.from_json('{"max_tokens": 5, "tokenizer": "nope"}')


_ENCODER: list[TextEncoder] = []


def _shared() -> TextEncoder:
    if not _ENCODER:
        _ENCODER.append(TextEncoder.train(TEXTS, min_frequency=1, max_tokens=8))
    return _ENCODER[0]
