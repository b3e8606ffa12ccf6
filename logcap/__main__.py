"""``python -m logcap`` is the ``logcap`` command."""

from logcap.cli import main

main()
