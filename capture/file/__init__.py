"""The file source: discovery, tailing, the collector loop."""
