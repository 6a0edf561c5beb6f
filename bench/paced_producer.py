"""The Kafka benchmark's load generator: the fleet's lines as they are, at a fixed rate.

FLEAD's own producer (``dataflows.producer``) decodes, validates and re-encodes every row;
as the load generator on the machine under test it could not offer more than ~17,000
messages/s while FLEAD ran beside it on 2 cores. The fleet's lines are already messages in
the schema, so this sends each one's bytes, keyed by its device id, paced to ``rate``.

    python -m bench.paced_producer FLEET.jsonl TOPIC BOOTSTRAP RATE
"""

from __future__ import annotations

import sys
import time

import orjson
from confluent_kafka import Producer

from operators.messages import peek_device_id


def produce(fleet: str, topic: str, bootstrap: str, rate: float) -> dict[str, float]:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "queue.buffering.max.messages": 1_000_000})
    started = time.monotonic()
    sent = 0
    with open(fleet, "rb") as lines:
        for line in lines:
            ahead = started + sent / rate - time.monotonic()
            if ahead > 0.002:  # sleep in steps of a few ms, not per message
                time.sleep(ahead)
            device_id = peek_device_id(line) or orjson.loads(line)["device_id"]
            producer.produce(topic, line.rstrip(b"\n"), key=device_id.encode())
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
    producer.flush()
    seconds = time.monotonic() - started
    return {"sent": sent, "seconds": seconds, "rate": sent / seconds}


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    print(orjson.dumps(produce(sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]))).decode(), flush=True)
