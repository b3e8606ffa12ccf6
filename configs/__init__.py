"""Shipped configuration files (the embedded default lives here as package data)."""
