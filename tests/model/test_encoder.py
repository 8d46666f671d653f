"""The text encoder: trained vocabulary, truncation, digest and robustness to any string."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Encoding, Tokenizer, normalizers

from corpus.reuters import load
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


# -- the head cut: texts are cut before they are normalised -----------------------------------
EXPANDING = "\ufdfa"
"""ARABIC LIGATURE SALLALLAHOU ALAYHE WASALLAM: 3 UTF-8 bytes, NFKC gives 18 characters."""
TRICKY = ["a", "b", " ", "\n", "7", ".", ">", "\u0301", "\u0338", EXPANDING, "\u2474", "\u33c2"]
TRICKY += ["\u0130", "\u03a3", "\u1100", "\u1161", "\u11a8", "\ufb01", "\u00a0", "\ud800"]
"""Characters NFKC, lower-casing or pre-tokenising treat with their neighbours: combining
marks, Hangul jamo that compose, ligatures and compatibility characters that expand, a capital
dotted I that lower-cases to two characters, a lone surrogate."""


def full_path(encoder: TextEncoder, texts: list[str]) -> list[list[int]]:
    """The encoding of the whole of every text, truncated afterwards: what the cut must equal."""
    repaired = [t.encode("utf-8", errors="replace").decode("utf-8") for t in texts]
    encodings = encoder.tokenizer.encode_batch(repaired, add_special_tokens=False)
    return [e.ids[: encoder.max_tokens] or [UNK_ID] for e in encodings]


def long_ordinary(words: int) -> str:
    return " ".join(TEXTS[i % len(TEXTS)] for i in range(words // 5)) + "."


@pytest.mark.parametrize(
    "text",
    [
        long_ordinary(2000),
        EXPANDING * 87_381,  # a 256 KiB body of it
        "x" * 5000 + " " + EXPANDING * 3000,  # one long word, then expanding characters
        ("oil " * 3 + "e\u0301" * 40 + " ") * 200,  # combining marks wherever the cut falls
        "\u1100\u1161\u11a8" * 3000,  # Hangul jamo that compose into syllables
        "Oil rose\ud800 " * 900,  # lone surrogates
        " " * 10_000 + "oil prices rose on monday the company said profits rose",
    ],
    ids=["ordinary", "expanding", "long-word", "marks", "jamo", "surrogates", "spaces-first"],
)
def test_cutting_before_normalising_gives_the_full_encodings_first_tokens(text: str) -> None:
    for max_tokens in (8, 512):
        encoder = TextEncoder(_shared().tokenizer, max_tokens=max_tokens)
        assert encoder.encode([text]) == full_path(encoder, [text])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(st.sampled_from(TRICKY), min_size=100, max_size=400), max_size=6))
def test_any_cut_of_tricky_text_gives_the_full_encodings_first_tokens(texts: list[str]) -> None:
    encoder = _shared()  # max_tokens 8: heads of 128 characters, so the cut falls anywhere
    assert encoder.encode(texts) == full_path(encoder, texts)


class Recording:
    """A tokenizer that records the length of every text it is asked to encode."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.calls: list[list[int]] = []

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def encode_batch(self, texts: list[str], add_special_tokens: bool) -> list[Encoding]:
        self.calls.append([len(t) for t in texts])
        return self.tokenizer.encode_batch(texts, add_special_tokens=add_special_tokens)


def test_expanding_texts_are_normalised_only_as_far_as_max_tokens_can_use() -> None:
    bodies = [EXPANDING * 87_381] * 40  # 256 KiB each
    expected = full_path(TextEncoder(_shared().tokenizer, max_tokens=512), bodies[:1]) * 40
    recording = Recording(_shared().tokenizer)
    encoder = TextEncoder(recording, max_tokens=512)  # type: ignore[arg-type]
    assert encoder.encode(bodies) == expected
    assert max(n for call in recording.calls for n in call) <= 8 * (512 + 8)
    assert max(sum(call) for call in recording.calls) <= 1 << 15


# -- the ASCII path: the library's ids without the library ------------------------------------
def test_ascii_text_gets_the_librarys_ids_on_the_whole_reuters_corpus() -> None:
    corpus = load()
    texts = [a.text for a in corpus.train + corpus.validation + corpus.test]
    assert sum(t.isascii() for t in texts) > 0.99 * len(texts)  # the path is the common one
    for max_tokens in (128, 512):
        encoder = TextEncoder.train([a.text for a in corpus.train], max_tokens=max_tokens)
        assert encoder.encode(texts) == full_path(encoder, texts)


ASCII = st.characters(max_codepoint=127)
WORDY = st.sampled_from(["oil", "Oil", "OIL", "rose", "3.5", "pct", "_", "[", "]", "PAD", "UNK"])


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.text(ASCII, max_size=300) | st.lists(WORDY | st.text(ASCII, max_size=3)).map(" ".join),
        max_size=6,
    )
)
def test_any_ascii_text_gets_the_librarys_ids(texts: list[str]) -> None:
    """Every ASCII character, control characters and the ones either side of ``\\w`` and
    ``\\s`` included, and the special tokens' literals."""
    for encoder in (_shared(), TextEncoder(_shared().tokenizer, max_tokens=512)):
        assert encoder.encode(texts) == full_path(encoder, texts)


def test_a_special_tokens_literal_is_matched_as_the_library_matches_it(
    encoder: TextEncoder,
) -> None:
    ids = encoder.encode(["oil [PAD] rose [UNK]"])[0]
    assert ids == full_path(encoder, ["oil [PAD] rose [UNK]"])[0]
    assert ids[1] == PAD_ID  # the library's behaviour, kept: it matches added tokens first


def test_an_encoder_with_another_pipeline_keeps_the_library() -> None:
    """The ASCII path lower-cases; a tokenizer that does not must not get it."""
    cased = TextEncoder.train(TEXTS, min_frequency=1, max_tokens=8).tokenizer
    cased.normalizer = normalizers.NFKC()
    encoder = TextEncoder(Tokenizer.from_str(cased.to_str()), max_tokens=8)
    assert encoder.encode(["Oil OIL oil"]) == full_path(encoder, ["Oil OIL oil"])
    assert encoder.encode(["Oil OIL oil"])[0][:2] == [UNK_ID, UNK_ID]
