"""logcap: a log capture agent built as a multi-process pipeline over shared-memory rings.

Stages (folders): ``capture`` → ``ringbuf`` → ``dispatch`` → ``ringbuf`` → ``sinks``;
``logcap.supervisor`` runs them; see docs/ARCHITECTURE.md.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
