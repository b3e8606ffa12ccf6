"""The ``http`` sink: NDJSON batches POSTed to a URL."""
