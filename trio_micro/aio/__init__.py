"""An asyncio client of trio_micro services, on the same sans-io protocol core.

::

    import asyncio
    from trio_micro import aio
    from users_api import GetUserRequest, UserService   # the rpc.Service definition

    async def main() -> None:
        async with aio.open_channel("127.0.0.1:7001") as channel:
            users = channel.stub(UserService)          # typed: mypy sees UserService
            async with aio.timeout(0.2):               # the deadline crosses the wire
                print(await users.get_user(GetUserRequest(user_id=1)))
            async with users.import_users() as (send, receive):  # a client-stream
                for user in new_users:                 # CreateUserRequest structs
                    await send.send(user)              # waits for the server's credit
                await send.aclose()                    # half-close (END)
                print(await receive.receive())         # the one answer
            print(await channel.call("users/get_user", {"user_id": 1}))  # untyped: dicts

    asyncio.run(main())                                # or uvloop.run(main())

The protocol (:mod:`trio_micro.protocol`) is sans-io, so this is the trio client's state
machine behind an :class:`asyncio.Protocol`; services are the same ``rpc.Service``
classes, whose definitions (and ``rpc.RpcError``) do not import Trio -- neither does this
package. Every call shape: unary, server-stream (:class:`ResponseStream`), client- and
bidi-stream (:class:`StreamCall`, the trio client's send/receive pair with the same
names; :exc:`EndOfChannel`, :exc:`ClosedResourceError` and :exc:`BrokenResourceError`
stand in for trio's exceptions). A cancelled task sends CANCEL; :func:`timeout` sends its
deadline (a bare ``asyncio.timeout()`` can't be read, but its cancellation still sends
CANCEL). Untyped calls by name (:meth:`Channel.call`, :meth:`~Channel.call_stream`,
:meth:`~Channel.stream_call`) are the trio channel's, for programs with no stub class: plain
values in and out. ``open_channel(target, compression="zlib")`` (and ``stub(...,
compression=...)`` or a call's ``compression=``) compresses both ways as the trio channel
does, through the same protocol core; the HELLO announces every encoding this process can
inflate. One connection to one ``host:port``:
no registry targets, balancing, retries, interceptors or keepalive pings (the trio
channel has them).
"""

from __future__ import annotations

from .._lazy import fixup_module_metadata
from ._channel import Channel, ResponseStream, open_channel
from ._deadline import Deadline, timeout, timeout_at
from ._streams import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfChannel,
    RequestSender,
    ResponseReceiver,
    StreamCall,
)

__all__ = [
    "BrokenResourceError",
    "Channel",
    "ClosedResourceError",
    "Deadline",
    "EndOfChannel",
    "RequestSender",
    "ResponseReceiver",
    "ResponseStream",
    "StreamCall",
    "open_channel",
    "timeout",
    "timeout_at",
]

fixup_module_metadata(__name__, {name: globals()[name] for name in __all__})
del fixup_module_metadata
