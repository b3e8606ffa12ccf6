"""The baseline program of bench/test_kafka.py: read the input file, make each line the
entry logcap would send, produce them all with the kafka sink's settings, wait for every
acknowledgement. Run as its own process so it pays what logcap pays to start.

    python -m bench.kafka_bare_producer BOOTSTRAP TOPIC INPUT_FILE SOURCE
"""

from __future__ import annotations

import socket
import sys

from confluent_kafka import Producer

from logcap.dispatch.encode import entry_prefix


def main(bootstrap: str, topic: str, path: str, source: str) -> int:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": "lz4",
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
            "delivery.report.only.error": True,
        }
    )
    prefix = entry_prefix(source, {"host": socket.gethostname(), "path": path}, 0)
    produce = producer.produce
    with open(path, "rb") as lines:
        for line in lines:  # these lines need no JSON escaping
            value = prefix + b'"' + line[:-1] + b'"}'
            while True:
                try:
                    produce(topic, value, source.encode())
                    break
                except BufferError:
                    producer.poll(0.05)
    return 1 if producer.flush(300) else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:5]))
