"""``python -m logcap.worker ROLE NAME``: a child process of ``logcap run``.

The run plan arrives on stdin (msgpack). Roles: ``collector``, ``dispatcher``, ``sink``, ``retry``.
"""

from __future__ import annotations

import sys

from logcap.child import ChildContext, become_child, configure_logging
from logcap.plan import DISPATCHER, RETRY, RunPlan


def main(argv: list[str]) -> int:
    """Run one role until it finishes; the exit code tells the supervisor how it went."""
    role, name = argv[0], argv[1]
    plan = RunPlan.decode(sys.stdin.buffer.read())
    stop = become_child(plan.supervisor_pid, graceful_sigterm=(role == "collector"))
    configure_logging(name)
    ctx = ChildContext(plan, {"dispatcher": DISPATCHER, "retry": RETRY}.get(role, name))
    ctx.stop = stop
    if role == "collector":
        from logcap.capture.process import run_collector

        run_collector(ctx, name)
    elif role == "dispatcher":
        from logcap.dispatch.process import run_dispatcher

        run_dispatcher(ctx)
    elif role == "retry":
        from logcap.retry.process import run_retry

        run_retry(ctx)
    elif role == "sink":
        from logcap.sinks.process import run_sink

        run_sink(ctx, name)
    else:
        print(f"unknown role {role!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
