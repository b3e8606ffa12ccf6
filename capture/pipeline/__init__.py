"""Processing pipelines: steps run on a source's entries in its collector process."""
