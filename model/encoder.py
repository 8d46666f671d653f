"""Text to token ids: a word-level vocabulary on HF ``tokenizers``, trained on the train split.

Normalisation is NFKC, lower-casing and every digit mapped to ``0`` (so "1.25 mln" and
"3.50 mln" share their shape); pre-tokenisation splits on whitespace and punctuation runs.

Truncation rule: an article keeps its *first* ``max_tokens`` tokens. ``Article.text`` puts the
title first, so the title and the lead, where news states its subject, always survive.

Every string encodes to at least one id: text with no tokens (empty, only spaces) becomes the
single ``[UNK]`` id, and text Python holds but UTF-8 cannot (lone surrogates) has those code
points replaced before encoding. Id 0 is ``[PAD]`` and never comes out of :meth:`encode`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers

from model.errors import ModelError

PAD = "[PAD]"
UNK = "[UNK]"
PAD_ID = 0
UNK_ID = 1
DEFAULT_MAX_TOKENS = 512


@dataclass(frozen=True)
class TextEncoder:
    """A trained tokenizer plus the truncation length; immutable and safe to share."""

    tokenizer: Tokenizer
    max_tokens: int = DEFAULT_MAX_TOKENS

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ModelError(f"max_tokens must be at least 1, not {self.max_tokens}")
        if self.tokenizer.token_to_id(PAD) != PAD_ID or self.tokenizer.token_to_id(UNK) != UNK_ID:
            raise ModelError(f"tokenizer must map {PAD} to {PAD_ID} and {UNK} to {UNK_ID}")

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        *,
        vocab_size: int = 30_000,
        min_frequency: int = 2,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> TextEncoder:
        """Learn the vocabulary (most frequent words first) from ``texts``."""
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        tokenizer.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Replace(Regex(r"\d"), "0")]
        )
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=[PAD, UNK],
            show_progress=False,
        )
        tokenizer.train_from_iterator((_valid_utf8(text) for text in texts), trainer)
        return cls(tokenizer, max_tokens)

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids per text, in order; each list has 1..``max_tokens`` ids."""
        if not texts:
            return []
        try:
            encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        except TypeError:  # a lone surrogate somewhere: repair every text and try once more
            encodings = self.tokenizer.encode_batch(
                [_valid_utf8(t) for t in texts], add_special_tokens=False
            )
        return [encoding.ids[: self.max_tokens] or [UNK_ID] for encoding in encodings]

    def to_json(self) -> str:
        """The tokenizer and the truncation length as one JSON document."""
        return json.dumps(
            {"max_tokens": self.max_tokens, "tokenizer": self.tokenizer.to_str()}, sort_keys=True
        )

    @classmethod
    def from_json(cls, text: str) -> TextEncoder:
        """Inverse of :meth:`to_json`; raises ``ModelError`` when the JSON is not an encoder."""
        try:
            data = json.loads(text)
            return cls(Tokenizer.from_str(data["tokenizer"]), int(data["max_tokens"]))
        except Exception as exc:  # tokenizers raises plain Exception on bad JSON
            raise ModelError(f"not a text encoder: {exc}") from None

    @property
    def digest(self) -> str:
        """sha256 of :meth:`to_json`: two encoders with one digest encode identically."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


def _valid_utf8(text: str) -> str:
    """``text`` with any code point UTF-8 cannot hold (lone surrogates) replaced by U+FFFD."""
    return text.encode("utf-8", errors="replace").decode("utf-8")
