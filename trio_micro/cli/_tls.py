"""The TLS options every networked command shares, and what they turn into.

One set of flags, added by :func:`add_tls_arguments`, for ``serve``, ``registry``,
``call``, ``list``, ``bench``, ``health``, ``schema`` and ``gateway`` (its calls to the
services; its HTTP side stays plain):

* ``--tls-cert FILE`` / ``--tls-key FILE``: this process's certificate and key (PEM). A
  server serves TLS with them; a client presents them (mutual TLS).
* ``--tls-ca FILE``: the CA bundle of the other side. A client verifies the server with it
  (default: the system's CAs); a server requires every client to present a certificate
  signed by it (mutual TLS).
* ``--tls-server-name NAME``: the name a client checks the server's certificate against
  (default: the host of the address).
* ``--tls``: TLS with none of the above (a client trusting the system's CAs).

A client uses TLS when any of them is given, and uses it for the registry or etcd behind a
``registry://`` / ``etcd://`` target too (``https://`` for etcd); ``serve`` uses the same
files to talk to its ``--registry``. A file that cannot be used is a usage error (exit 2)
naming the flag and the file, on one line.

The registry token (issue #15) is a file of the same kind: ``registry --token-file`` and
``serve --registry-token-file`` (both default to ``$TRIO_MICRO_REGISTRY_TOKEN_FILE``) name
a file holding the shared token, read by :func:`read_token_file`; one that is missing,
unreadable, empty or not one printable word is a usage error (exit 2) too, and the token
never appears in a message. The client commands (``call``, ``list``, ``bench``, ``health``,
``schema``, ``gateway``) take ``--registry-token-file`` too
(:func:`add_registry_token_argument`), and present the token to the registry behind a
``registry://`` target: one that runs with ``--protect-lookups`` answers lookups only
with it. Given with another target, the flag is a usage error (there is no registry server
to present it to); its environment default is then ignored, so that exporting it for
registry targets does not break ``trio-micro health 127.0.0.1:50051``.
"""

from __future__ import annotations

import argparse
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, final

from trio_micro import rpc
from trio_micro.registry import (
    Registry,
    check_token,
    open_etcd_registry,
    open_registry_client,
)

from ._common import usage_error

__all__: list[str] = []  # internal to the cli package

# A token file larger than this is not a token file (it is read whole).
MAX_TOKEN_FILE_SIZE: Final = 4096

#: The flag that names the registry's token file, in ``serve`` and the client commands.
REGISTRY_TOKEN_FLAG: Final = "--registry-token-file"

_TLS_HELP: Final = """\
TLS: --tls-cert/--tls-key are this side's certificate and key; --tls-ca is the CA of the
  other side (a client verifies the server with it; a server requires client certificates
  signed by it: mutual TLS); --tls-server-name overrides the name checked in the server's
  certificate; --tls turns TLS on with the system's CAs. Registries and etcd (https) are
  reached with the same settings."""


def add_tls_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the shared TLS options (see the module docs) to a command's parser."""
    group = parser.add_argument_group("TLS", description=_TLS_HELP)
    group.add_argument("--tls", action="store_true", help="use TLS (implied by the options below)")
    group.add_argument("--tls-cert", metavar="FILE", help="this side's certificate chain (PEM)")
    group.add_argument(
        "--tls-key", metavar="FILE", help="its private key (PEM; default: in the cert)"
    )
    group.add_argument(
        "--tls-ca",
        metavar="FILE",
        help="CA of the other side: verifies the server / requires client certificates",
    )
    group.add_argument(
        "--tls-server-name", metavar="NAME", help="name to check in the server's certificate"
    )


@final
@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client command connects with: an SSL context (``None``: plain TCP) and the
    server name to check (``None``: the host of the address)."""

    context: ssl.SSLContext | None = None
    server_name: str | None = None

    @property
    def channel_options(self) -> dict[str, Any]:
        """The :func:`rpc.open_channel` keyword arguments that say this."""
        if self.context is None:
            return {}
        return {"ssl_context": self.context, "server_hostname": self.server_name}


def client_tls(args: argparse.Namespace) -> ClientTls:
    """The client side of the parsed TLS options; not a checkpoint.

    Raises:
        CommandError: A file cannot be used, or --tls-key without --tls-cert (exit 2).
    """
    if not (args.tls or args.tls_cert or args.tls_key or args.tls_ca or args.tls_server_name):
        return ClientTls()
    if args.tls_key and not args.tls_cert:
        raise usage_error("--tls-key needs --tls-cert")
    context = _load(
        args,
        lambda: rpc.client_ssl_context(
            ca=args.tls_ca, certfile=args.tls_cert, keyfile=args.tls_key
        ),
    )
    return ClientTls(context, args.tls_server_name or None)


def server_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server side of the parsed TLS options (``None``: plain TCP); not a checkpoint.

    Raises:
        CommandError: A file cannot be used, or TLS was asked for without --tls-cert
            (exit 2).
    """
    if not (args.tls or args.tls_cert or args.tls_key or args.tls_ca):
        return None
    if not args.tls_cert:
        raise usage_error("serving TLS needs --tls-cert (and --tls-key unless the cert holds it)")
    return _load(
        args, lambda: rpc.server_ssl_context(args.tls_cert, args.tls_key, client_ca=args.tls_ca)
    )


def _load(args: argparse.Namespace, build: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """``build()``, a :class:`rpc.TlsFileError` becoming a usage error naming the flag."""
    try:
        return build()
    except rpc.TlsFileError as exc:
        flags = {args.tls_cert: "--tls-cert", args.tls_key: "--tls-key", args.tls_ca: "--tls-ca"}
        raise usage_error(f"{flags.get(exc.path, '--tls-cert')}: {exc}") from None


def read_token_file(path: str, flag: str) -> str:
    """The token in file ``path`` (surrounding whitespace stripped); not a checkpoint.

    Raises:
        CommandError: The file is missing, unreadable, larger than 4 KiB, empty, or its
            content is not one printable word (exit 2); the message names ``flag`` and
            the file, never the content.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_TOKEN_FILE_SIZE + 1)
    except OSError as exc:
        raise usage_error(f"{flag}: cannot read {path!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_TOKEN_FILE_SIZE:
        raise usage_error(f"{flag}: {path!r} is larger than {MAX_TOKEN_FILE_SIZE} bytes")
    try:
        token = data.decode().strip()
        check_token(token)
    except (UnicodeDecodeError, ValueError):
        what = "is empty" if not data.strip() else "does not hold one printable word"
        raise usage_error(f"{flag}: {path!r} {what}") from None
    return token


class _StoreGiven(argparse.Action):
    """``store``, and a note on the namespace that the flag was on the command line (an
    environment default does not pass through here)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"{self.dest}_given", True)


def add_registry_token_argument(
    parser: argparse.ArgumentParser,
    text: str = "a file holding the token of the registry behind a registry:// TARGET "
    "(trio-micro registry --token-file); needed when it runs with --protect-lookups",
) -> None:
    """Add ``--registry-token-file FILE`` (see the module docs): a client command's, or
    with its own help ``text``, serve's."""
    parser.add_argument(REGISTRY_TOKEN_FLAG, action=_StoreGiven, metavar="FILE", help=text)


def token_flag_given(args: argparse.Namespace) -> bool:
    """Whether ``--registry-token-file`` was on the command line, not only its
    environment default (``$TRIO_MICRO_REGISTRY_TOKEN_FILE``, meant for registry://)."""
    return bool(getattr(args, "registry_token_file_given", False))


def registry_token(args: argparse.Namespace) -> str | None:
    """The token to present to the registry behind ``args.target`` (``None``: none); not a
    checkpoint.

    Raises:
        CommandError: ``--registry-token-file`` given on the command line with a target
            other than ``registry://`` (exit 2), or as :func:`read_token_file`.
    """
    path = args.registry_token_file
    if not path:
        return None
    scheme, sep, _ = args.target.partition("://")
    if sep and scheme == "registry":
        return read_token_file(path, REGISTRY_TOKEN_FLAG)
    if not token_flag_given(args):
        return None  # the environment default, meant for registry:// targets
    if sep and scheme == "etcd":
        why = "an etcd:// target is looked up in etcd, which does not take it"
    else:
        why = f"{args.target!r} is one server, reached without a registry"
    raise usage_error(f"{REGISTRY_TOKEN_FLAG} is for registry://HOST:PORT/SERVICE targets: {why}")


def open_registry(
    scheme: str, authority: str, tls: ClientTls, token: str | None = None
) -> AbstractAsyncContextManager[Registry]:
    """Open the registry at ``scheme://authority`` (``registry`` or ``etcd``) with ``tls``,
    presenting ``token`` to a registry server (etcd, which has its own authentication,
    ignores it)."""
    if scheme == "etcd":
        if tls.context is None:
            return open_etcd_registry(f"http://{authority}")
        return open_etcd_registry(f"https://{authority}", ssl_context=tls.context)
    return open_registry_client(authority, token=token, **tls.channel_options)


def open_command_channel(
    args: argparse.Namespace, **options: Any
) -> AbstractAsyncContextManager[rpc.Channel]:
    """:func:`open_target_channel` for a client command's parsed TARGET, TLS options and
    ``--registry-token-file``. Checks them at once (usage errors, exit 2), reading the
    token file; nothing is opened until the result is entered. Not a checkpoint."""
    tls = client_tls(args)
    return open_target_channel(args.target, tls, token=registry_token(args), **options)


@asynccontextmanager
async def open_target_channel(
    target: str, tls: ClientTls, *, token: str | None = None, **options: Any
) -> AsyncIterator[rpc.Channel]:
    """``rpc.open_channel(target, **options)`` with ``tls``, which also reaches the registry
    behind a ``registry://`` or ``etcd://`` target; ``token`` is presented to a registry
    server (:func:`registry_token`).

    Calls over it fail fast as the library's do (:func:`rpc.open_channel`): an unreachable
    registry or a service with no endpoints is ``UNAVAILABLE`` saying so at once, with the
    exit code of ``UNAVAILABLE`` (64 + 14), not ``DEADLINE_EXCEEDED`` at ``--timeout``.
    """
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in ("etcd", "registry"):
        async with rpc.open_channel(target, **tls.channel_options, **options) as channel:
            yield channel
        return
    authority, _, service = rest.partition("/")
    async with (
        open_registry(scheme, authority, tls, token) as registry,
        rpc.open_channel(service, registry=registry, **tls.channel_options, **options) as channel,
    ):
        yield channel
