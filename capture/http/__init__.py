"""The HTTP ingest source: clients POST entries to the agent."""
