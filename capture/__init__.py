"""Sources: collector processes that read inputs into their rings."""
