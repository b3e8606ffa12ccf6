"""The docker source: container stdout and stderr through the Docker API."""
