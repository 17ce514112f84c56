"""Helpers shared by the toolkit's channel tests."""

from __future__ import annotations

import trio


def prefilled(n: int) -> trio.MemoryReceiveChannel[int]:
    """A receive channel holding ``0 .. n - 1``, its sending side closed."""
    send_channel, receive_channel = trio.open_memory_channel[int](n)
    with send_channel:
        for i in range(n):
            send_channel.send_nowait(i)
    return receive_channel
