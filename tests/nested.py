"""Deeply nested msgpack for the decode-site tests (issue #15, defect 3)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from trio_micro import rpc

#: 100,000 nested one-element arrays around a 1 (100 KB): deeper than the recursion limit,
#: even raised (Hypothesis raises it by a few thousand while it runs); the issue's 5 KB
#: (5,000 levels) is enough at the default limit of 1,000.
NESTED = b"\x91" * 100_000 + b"\x01"
#: A map whose one (unknown) key holds NESTED: typed decoders skip it by recursing.
NESTED_REQUEST = b"\x81\xa1x" + NESTED
#: The JSON form: 100,000 nested arrays (JSON decoders recurse on arrays like msgpack ones).
NESTED_JSON = "[" * 100_000 + "]" * 100_000


class Deep(msgspec.Struct):
    deep: msgspec.Raw


class Shallow(msgspec.Struct):
    pass


class DeepService(rpc.Service, name="test.Deep"):
    @rpc.unary
    async def answer(self, req: Shallow) -> Deep:
        return Deep(msgspec.Raw(NESTED))

    @rpc.server_stream
    async def items(self, req: Shallow) -> AsyncIterator[Deep]:
        yield Deep(msgspec.Raw(NESTED))


class ShallowClient(rpc.Service, name="test.Deep"):
    """The client's view of the same service: responses with no fields (all skipped)."""

    @rpc.unary
    async def answer(self, req: Shallow) -> Shallow:
        raise NotImplementedError

    @rpc.server_stream
    async def items(self, req: Shallow) -> AsyncIterator[Shallow]:
        raise NotImplementedError
        yield  # pragma: no cover
