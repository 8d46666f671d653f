"""The streaming worker: Kafka in, micro-batched inference, Kafka out (``tagstream worker run``).

Modules, from the outside in: ``app`` (composes everything and runs the loop), ``pipeline``
(the three threads and their bounded queues), ``consumer`` / ``publisher`` (thin kafka-python
wrappers), ``assembler`` (decode, encode, batch), ``runner`` (infer and publish),
``batcher``, ``offsets``, ``inference``, ``swap``, ``metrics``, ``health``, ``settings``,
``errors``.
"""
