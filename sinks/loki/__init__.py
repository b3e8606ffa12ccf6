"""The loki sink: streams per label set, pushed as snappy protobuf (or JSON) to Loki."""
