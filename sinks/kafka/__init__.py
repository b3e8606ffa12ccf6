"""The kafka sink: every entry one message, acknowledged by the brokers."""
