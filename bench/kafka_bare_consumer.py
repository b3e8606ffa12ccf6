"""The baseline program of bench/test_kafka_source.py: consume a topic from its start as
a new group member (the kafka source's consumer settings: no auto-commit) and write every
value to a file, one a line, until COUNT messages are written.

    python -m bench.kafka_bare_consumer BOOTSTRAP TOPIC GROUP OUTPUT COUNT
"""

from __future__ import annotations

import sys

from confluent_kafka import Consumer


def main(bootstrap: str, topic: str, group: str, output: str, count: str) -> int:
    wanted = int(count)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "fetch.wait.max.ms": 100,
            "session.timeout.ms": 6000,
            "log_level": 0,
        }
    )
    consumer.subscribe([topic])
    written = 0
    with open(output, "wb") as out:
        while written < wanted:
            messages = consumer.consume(1000, 0.1)
            values = [m.value() for m in messages if m.error() is None]
            if values:
                out.write(b"\n".join(values) + b"\n")
                written += len(values)
    consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:6]))
