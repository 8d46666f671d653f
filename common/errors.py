"""The one root of tagstream's exceptions.

    TagstreamError                 root; ``retriable`` says whether trying again may succeed
    ├── ConfigError                a setting is missing or wrong (raised at start)
    ├── StackError                 the local Kafka/Redis stack could not be installed or run
    ├── DataError                  the corpus is missing, corrupt or not as documented
    ├── model.errors.ModelError    artifacts, encoder, registry (see ``model.errors``)
    ├── worker.errors.WorkerError  the streaming loop (see ``worker.errors``)
    └── trainer.errors.TrainerError  training cycles (see ``trainer.errors``)

A loop branches on ``retriable`` rather than on concrete classes: a retriable error is
logged and tried again later, anything else ends the operation with its message.
"""

from __future__ import annotations


class TagstreamError(Exception):
    """Root of every error tagstream raises on purpose."""

    retriable: bool = False


class ConfigError(TagstreamError):
    """A setting is missing or has a value outside what is allowed."""


class StackError(TagstreamError):
    """The local stack (Apache Kafka, Redis) could not be installed, started or reached."""

    retriable = True


class DataError(TagstreamError):
    """The corpus is missing, fails its checksum, or does not parse."""
