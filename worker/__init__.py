"""The streaming worker: Kafka in, micro-batched inference, Kafka out (``tagstream worker run``).

Modules, from the outside in: ``app`` (composes everything and runs one process),
``supervisor`` (``--processes N``), ``pipeline`` (the poll loop and the stage threads),
``stages`` (what the stage threads share), ``source`` / ``sink`` (what the loop needs from
Kafka; the clients themselves live in :mod:`messaging`), ``assembler`` (decode, encode,
batch), ``decoding``, ``batcher``, ``scoring`` (infer and build results), ``inference``,
``results``, ``delivery`` (publish, acknowledge, transactions), ``offsets``, ``items``,
``models`` and ``swap`` (loading and hot-swapping models), ``metrics``, ``settings``,
``errors``.
"""
