"""The classifier network: embedding, bidirectional LSTM, pooling over real steps, a linear head.

Why each direction is its own unidirectional ``nn.LSTM``
--------------------------------------------------------
In a right-padded batch a fused bidirectional LSTM starts its backward pass at the last
*padded* position, so a short sequence's backward states depend on how much padding the batch
gave it: scores would change with the company an article keeps. Packing fixes that, but packing
is slow on CPU. Here the backward direction reads each sequence *reversed in place* (the real
steps mirrored, the padding left at the right), so both directions are causal over real steps
and padding only ever comes after them. A padded batch then yields exactly the states each
sequence has alone, on any bucket, and the packed path (used on CUDA) is the same arithmetic.

Pooling looks at real steps only: a mask excludes padding from max and mean, and ``final``
takes the forward state at the last real step and the backward state at the first.

The optional bag-of-words path (``bag_of_words``, wide & deep) adds a linear function of the
article's TF-IDF vector to the LSTM's logits: sublinear term frequency of each real token
times its inverse document frequency (a buffer set by the trainer from the training split;
0 for ``[PAD]`` and ``[UNK]``), L2-normalised per article. Each article's vector depends on
its own tokens only, so this path is batch-invariant too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model.config import NetworkConfig
from model.encoder import PAD_ID, UNK_ID
from model.errors import ModelError


class BiLSTMClassifier(nn.Module):
    """Token ids ``[batch, time]`` plus lengths -> one logit per label."""

    idf: Tensor
    """Inverse document frequency per word (only with ``bag_of_words``)."""

    def __init__(self, config: NetworkConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=PAD_ID)
        sizes = [config.embedding_dim] + [2 * config.hidden_size] * (config.layers - 1)
        self.forward_rnns = nn.ModuleList(
            nn.LSTM(size, config.hidden_size, batch_first=True) for size in sizes
        )
        self.backward_rnns = nn.ModuleList(
            nn.LSTM(size, config.hidden_size, batch_first=True) for size in sizes
        )
        self.embedding_dropout = nn.Dropout(config.embedding_dropout)
        self.layer_dropout = nn.Dropout(config.layer_dropout)
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = nn.Linear(config.pooled_size, config.n_labels)
        if config.bag_of_words:
            self.wide = nn.Linear(config.vocab_size, config.n_labels, bias=False)
            nn.init.zeros_(self.wide.weight)
            idf = torch.ones(config.vocab_size)
            idf[[PAD_ID, UNK_ID]] = 0.0
            self.register_buffer("idf", idf)

    def forward(self, ids: Tensor, lengths: Tensor, *, packed: bool = False) -> Tensor:
        """Logits ``[batch, n_labels]``; ``lengths`` (>= 1 each) say which steps are real.

        ``packed`` runs the LSTMs on packed sequences (the CUDA path); otherwise they run on the
        padded tensor, which gives the same states at every real step.
        """
        steps = ids.shape[1]
        mask = torch.arange(steps, device=ids.device)[None, :] < lengths.to(ids.device)[:, None]
        reverse = reversal_index(lengths.to(ids.device), steps)
        states = self.embedding_dropout(self.embedding(ids))
        for layer, (fwd, bwd) in enumerate(zip(self.forward_rnns, self.backward_rnns, strict=True)):
            if layer:
                states = self.layer_dropout(states)
            run = _run_packed if packed else _run_padded
            states = torch.cat(
                [
                    run(fwd, states, lengths),
                    _mirror(run(bwd, _mirror(states, reverse), lengths), reverse),
                ],
                dim=2,
            )
        logits: Tensor = self.head(self.head_dropout(self._pool(states, mask, lengths)))
        if self.config.bag_of_words:
            logits = logits + self.wide(tfidf(ids, mask, self.idf))
        return logits

    def _pool(self, states: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        pooling = self.config.pooling
        if pooling == "final":
            return final_states(states, lengths.to(states.device), self.config.hidden_size)
        pooled = []
        if pooling in ("max", "max_mean"):
            pooled.append(states.masked_fill(~mask[:, :, None], float("-inf")).amax(dim=1))
        if pooling in ("mean", "max_mean"):
            real = mask[:, :, None].to(states.dtype)
            pooled.append((states * real).sum(dim=1) / real.sum(dim=1))
        return torch.cat(pooled, dim=1)


def tfidf(ids: Tensor, mask: Tensor, idf: Tensor) -> Tensor:
    """``[batch, vocab]`` L2-normalised ``(1 + log tf) * idf`` of each row's real tokens."""
    counts = torch.zeros(ids.shape[0], idf.shape[0], device=ids.device)
    counts.scatter_add_(1, ids, mask.to(counts.dtype))
    present = counts > 0
    weights = torch.where(present, 1.0 + torch.log(counts.clamp_min(1.0)), 0.0) * idf
    normalised: Tensor = weights / weights.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return normalised


def reversal_index(lengths: Tensor, steps: int) -> Tensor:
    """``[batch, steps]`` positions that mirror each sequence's real steps, padding in place."""
    position = torch.arange(steps, device=lengths.device)[None, :]
    last = (lengths[:, None] - 1).to(position.dtype)
    return torch.where(position <= last, last - position, position)


def _mirror(states: Tensor, index: Tensor) -> Tensor:
    """Reorder time steps per sequence by ``index`` (its own inverse)."""
    return states.gather(1, index[:, :, None].expand(-1, -1, states.shape[2]))


def _run_padded(rnn: nn.Module, states: Tensor, lengths: Tensor) -> Tensor:
    output, _ = rnn(states)
    result: Tensor = output
    return result


def _run_packed(rnn: nn.Module, states: Tensor, lengths: Tensor) -> Tensor:
    packed = pack_padded_sequence(states, lengths.cpu(), batch_first=True, enforce_sorted=False)
    output, _ = pad_packed_sequence(rnn(packed)[0], batch_first=True, total_length=states.shape[1])
    result: Tensor = output
    return result


def final_states(states: Tensor, lengths: Tensor, hidden: int) -> Tensor:
    """Forward state at each sequence's last real step, backward state at its first."""
    last = (lengths - 1).to(torch.long)[:, None, None].expand(-1, 1, hidden)
    forward = states[:, :, :hidden].gather(1, last)[:, 0]
    return torch.cat([forward, states[:, 0, hidden:]], dim=1)


def build_network(
    config: NetworkConfig,
    state: Mapping[str, Tensor | npt.NDArray[Any]] | None = None,
    *,
    seed: int | None = None,
) -> BiLSTMClassifier:
    """A network with ``state`` (tensors or an artifact's arrays) loaded strictly, or freshly
    initialised from ``seed``.

    Seeding happens on a forked generator, so building a network leaves the global RNG as it was.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        network = BiLSTMClassifier(config)
    if state is not None:
        try:
            network.load_state_dict({k: _tensor(v) for k, v in state.items()}, strict=True)
        except RuntimeError as exc:
            raise ModelError(f"weights do not fit the network: {exc}") from None
    return network


def _tensor(value: Tensor | npt.NDArray[Any]) -> Tensor:
    """A tensor of ``value``; arrays are copied (an artifact's may be read-only)."""
    return value if isinstance(value, Tensor) else torch.from_numpy(np.array(value))
