"""Sinks: one process each, reading the shared batch ring in place."""
