"""Which service ``trio-micro serve`` runs, and how it is opened: ``MODULE:ATTR``.

Resolution of ``MODULE:ATTR``
-----------------------------
``MODULE`` is imported (the current directory is on ``sys.path`` under ``python -m``, as for
any ``-m`` run) and ``ATTR`` (dotted names allowed) looked up in it. It must be an
:class:`rpc.Service <trio_micro.rpc.Service>` subclass or instance:

* a class with a classmethod ``open(cls, **options)`` returning an async context manager
  that yields an instance: served as ``async with Cls.open(**options) as service`` (for
  services that own resources, such as a database);
* any other class: served as ``Cls(**options)``;
* an instance: served as it is (``-o`` options are refused).

The options are the ``-o KEY=VALUE`` pairs, all strings. ``TypeError`` or ``ValueError``
from ``open()`` / the constructor (an unknown or bad option) is reported in one line.

Split from :mod:`._serve` (which is about serving): this is the part a newcomer reads
to make their own service servable.
"""

from __future__ import annotations

import importlib
from contextlib import AbstractAsyncContextManager, AsyncExitStack

from trio_micro import rpc

from ._common import CommandError, usage_error

__all__: list[str] = []  # internal to the cli package


def resolve_service(spec: str) -> type[rpc.Service] | rpc.Service:
    """Import ``MODULE:ATTR`` and return the service class or instance it names.

    See the module docs for the rule. Not a checkpoint (imports block).

    Raises:
        CommandError: ``spec`` is not of the form ``MODULE:ATTR`` (exit 2).
        CommandError: The module can't be imported, has no such attribute, or the
            attribute is neither an ``rpc.Service`` subclass nor an instance of one.
    """
    module_name, sep, attr = spec.partition(":")
    if not (
        sep
        and all(part.isidentifier() for part in module_name.split("."))
        and all(part.isidentifier() for part in attr.split("."))
    ):
        raise usage_error(f"expected MODULE:ATTR, such as 'myapp.users:UserService', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        if module_name == missing or module_name.startswith(missing + "."):
            raise CommandError(
                f"cannot import {module_name!r}: no module named {missing!r} "
                "(run from the directory that holds it, or set PYTHONPATH)"
            ) from None
        raise CommandError(f"cannot import {module_name!r}: {exc}") from None
    except Exception as exc:  # the module itself failed: say how, in one line
        raise CommandError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    target: object = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CommandError(f"module {module_name!r} has no attribute {attr!r}") from None
    if isinstance(target, type):
        if issubclass(target, rpc.Service) and target is not rpc.Service:
            return target
    elif isinstance(target, rpc.Service):
        return target
    raise CommandError(f"{spec!r} is not an rpc.Service subclass or instance: {target!r}")


async def enter_service(
    stack: AsyncExitStack,
    spec: str,
    target: type[rpc.Service] | rpc.Service,
    options: dict[str, str],
) -> rpc.Service:
    """Open the service as the module docs say; its context is entered on ``stack``."""
    if isinstance(target, rpc.Service):
        if options:
            raise CommandError(f"{spec!r} is a service instance; -o/--option needs a service class")
        return target
    name = target.__qualname__
    opener = getattr(target, "open", None)
    if callable(opener):
        try:
            manager = opener(**options)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad options for {name}.open(): {exc}") from None
        if not isinstance(manager, AbstractAsyncContextManager) and not hasattr(
            manager, "__aenter__"
        ):
            raise CommandError(
                f"{name}.open() must return an async context manager, got {manager!r}"
            )
        try:
            service: object = await stack.enter_async_context(manager)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad options for {name}.open(): {exc}") from None
        if not isinstance(service, rpc.Service):
            raise CommandError(f"{name}.open() must yield an rpc.Service, got {service!r}")
        return service
    try:
        return target(**options)
    except (TypeError, ValueError) as exc:
        raise CommandError(f"bad options for {name}(): {exc}") from None
