"""The union of every source type's config."""

from logcap.capture.docker.config import DockerSourceConfig
from logcap.capture.file.config import FileSourceConfig
from logcap.capture.http.config import HttpSourceConfig
from logcap.capture.kafka.config import KafkaSourceConfig

SourceConfig = FileSourceConfig | HttpSourceConfig | DockerSourceConfig | KafkaSourceConfig
