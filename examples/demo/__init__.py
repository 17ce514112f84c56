"""The whole framework at work, in one command: ``make demo`` (``python -m examples.demo``).

It runs from the repository's folder (the children import ``examples.user_service``);
the installed ``trio-micro`` package does not carry it.

Theory of operation
-------------------
The demo is a small supervisor plus a client. In a new run folder it seeds one SQLite
database (``python -m examples.user_service seed``), starts ``trio-micro registry`` and
``--replicas`` copies of ``trio-micro serve examples.user_service:UserService`` as child
processes on 127.0.0.1 with port 0, then ``--orders`` copies of ``trio-micro serve
examples.orders:OrderService`` (which find users through the registry) and the notifier
(``python -m examples.notifier``, following orders through the registry), and reads each
child's one ready line (``registry listening on HOST:PORT`` / ``serving users on
HOST:PORT`` / ``notifier following orders on ...``) from its stdout under a timeout.
Every child writes JSON-lines logs into the run folder and its stderr
(and any further stdout) into ``NAME.stderr.txt`` (``NAME.stdout.txt``) there; those
are deleted at the end when they stayed empty.

The client, in the demo's own process, finds the replicas through the registry (it waits
until the channel has a ready connection to each one), then runs ``--calls`` untyped calls,
``users/get_user`` and (a seeded ``--order-share`` of them) ``orders/create_order`` under a
deadline of its own, ``--concurrency`` in flight, through the load engine of
``trio-micro bench`` (:func:`trio_micro.cli.run_load`) with a live progress bar.
User ids follow a Zipf-like law (weight ``1/rank**1.1``, seeded, so every run asks for the
same ids in the same order). When half of the calls are done, the progress callback kills
one replica with SIGKILL; the calls that were in flight on it fail with ``UNAVAILABLE``
and the channel retries them on the other replicas (``GetUser`` is idempotent), the dead
endpoint's reconnects fail, and its registration expires after ``--ttl`` seconds.

Then it stops the children (SIGTERM, a bounded wait, SIGKILL for stragglers, which the
report names; the notifier first, then orders, then users, then the registry), checks
that no process of theirs is left and that their ports are free, counts what the
replicas' logs say (calls per replica, cache hits, database queries; per service, calls
per replica by method and their p99), prints the summary, writes it to ``summary.json``,
prints the ``trio-micro logs summary`` of the run folder and the ``trio-micro logs
trace`` waterfall of the slowest CreateOrder that called users among the slowest 1%, and
writes ``report.html`` there: the logs' summary, that trace and the service graph
(:func:`trio_micro.analysis.build_service_graph`).

Modules: :mod:`.config` (settings, the workload), :mod:`.processes` (the children),
:mod:`.run` (one run: processes, then the client's load), :mod:`.system` (the orders
replicas and the notifier), :mod:`.report` (the users replicas' logs, the summary, the
verdict), :mod:`.system_report` (per-service tables, the waterfall, report.html),
:mod:`.cli` (arguments and the exit code).

Children are started in their own sessions (process groups): a Ctrl-C at the terminal
reaches only the demo, which then stops them in order. SIGINT, SIGTERM and SIGHUP cancel
the run and stop the children; a second signal kills them at once. Only a SIGKILL of the
demo itself can leave children behind (Linux's ``PR_SET_PDEATHSIG`` is no help: trio
forks from a worker thread, and the signal fires when that *thread* exits).

Exit codes: 0 when every call succeeded and every process stopped cleanly; 1 otherwise
(the report says what went wrong); 2 bad arguments; 128 + the signal number when
interrupted.
"""

from __future__ import annotations

from .cli import main
from .config import zipf_user_ids

__all__ = ["main", "zipf_user_ids"]
