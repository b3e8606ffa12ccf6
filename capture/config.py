"""The union of every source type's config."""

from logcap.capture.file.config import FileSourceConfig

SourceConfig = FileSourceConfig
