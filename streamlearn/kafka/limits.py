"""Message sizes: what the producer sends, and how large a dead letter must be to keep its record whole."""

from __future__ import annotations

__all__ = [
    "MAX_REQUEST_BYTES",
    "TOPIC_DEFAULT_BYTES",
    "MAX_DEAD_LETTER_BYTES",
    "HEADROOM",
    "dead_letter_bytes",
    "producer_max_bytes",
    "raw_bytes_within",
]

#: Largest embedding the producer sends; the broker's default ``message.max.bytes`` (1 MiB).
MAX_REQUEST_BYTES = 1_048_576
#: ``max.message.bytes`` of a topic created without it (the broker's default: 1 MiB and a batch header).
TOPIC_DEFAULT_BYTES = 1_048_588
#: Largest dead letter the daemon sizes its topic for. One produce request must stay under the
#: broker's ``socket.request.max.bytes`` (100 MiB by default); a record larger than this
#: needs (48 MiB) is dead-lettered with its first bytes, and its coordinates name the original.
MAX_DEAD_LETTER_BYTES = 64 * 1_048_576
#: Room for what surrounds a message: Kafka's record and batch headers, its key, and (in a dead
#: letter) the other fields (reason, detail, coordinates).
HEADROOM = 16_384


def dead_letter_bytes(record_bytes: int) -> int:
    """Size of a message that holds the dead letter of a ``record_bytes`` record whole (base64 grows 4/3), capped.

    >>> dead_letter_bytes(1_000_000)
    1349720
    >>> dead_letter_bytes(10**9) == MAX_DEAD_LETTER_BYTES
    True
    """
    return min(MAX_DEAD_LETTER_BYTES, 4 * -(-record_bytes // 3) + HEADROOM)


def producer_max_bytes(max_message_bytes: int) -> int:
    """The producer's size limit: an embedding (1 MiB at most), or the dead letter of a record of ``max_message_bytes``.

    >>> producer_max_bytes(1_000) == MAX_REQUEST_BYTES
    True
    """
    return max(MAX_REQUEST_BYTES, dead_letter_bytes(max_message_bytes))


def raw_bytes_within(message_bytes: int) -> int:
    """The most record bytes a dead letter of at most ``message_bytes`` can carry.

    >>> raw_bytes_within(dead_letter_bytes(1_000_000)) >= 1_000_000
    True
    >>> raw_bytes_within(TOPIC_DEFAULT_BYTES)
    774153
    """
    return max(0, message_bytes - HEADROOM) * 3 // 4
