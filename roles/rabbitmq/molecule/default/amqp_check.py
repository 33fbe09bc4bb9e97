"""AMQP checks run on the app server: a real publish and consume with the
app's user, and the guest account refused. Reads AMQP_* from the environment:
AMQP_EXCHANGE and AMQP_QUEUE name what must exist already (the scenario's
probes by default; the lab's check names the app's own)."""

import os
import sys
import time
import uuid

import amqp

host = os.environ["AMQP_HOST"]
vhost = os.environ.get("AMQP_VHOST", "queuesvc")
user = os.environ["AMQP_USER"]
password = os.environ["AMQP_PASSWORD"]
exchange = os.environ.get("AMQP_EXCHANGE", "molecule.probe")
existing_queue = os.environ.get("AMQP_QUEUE", "molecule.probe.a")
mode = sys.argv[1]


def connect(u: str, p: str, vh: str) -> amqp.Connection:
    conn = amqp.Connection(
        host=f"{host}:5672", userid=u, password=p, virtual_host=vh, connect_timeout=10
    )
    conn.connect()
    return conn


if mode == "roundtrip":
    body = f"verify-{uuid.uuid4()}"
    with connect(user, password, vhost) as conn:
        ch = conn.channel()
        # Passive: the role declared them durable; this fails if they are missing.
        ch.exchange_declare(exchange, "direct", passive=True)
        ch.queue_declare(existing_queue, passive=True)
        # What the app does: a durable queue of its own, then publish and consume.
        ch.queue_declare("verify.roundtrip", durable=True, auto_delete=False)
        ch.queue_bind("verify.roundtrip", exchange, routing_key="verify.roundtrip")
        ch.basic_publish(
            amqp.Message(body, delivery_mode=2),
            exchange=exchange,
            routing_key="verify.roundtrip",
        )
        msg = None
        for _ in range(50):
            msg = ch.basic_get("verify.roundtrip", no_ack=False)
            if msg is not None:
                break
            time.sleep(0.1)
        assert msg is not None, "no message came back"
        assert msg.body == body, (msg.body, body)
        ch.basic_ack(msg.delivery_tag)
        ch.queue_delete("verify.roundtrip")
    print(f"roundtrip ok: {body}")
elif mode == "refused":
    # Each (user, password, vhost) must be refused at login or on opening the vhost.
    cases = [
        ("guest", "guest", "/"),
        ("guest", "guest", vhost),
        (user, password + "x", vhost),
        (user, password, "/"),
    ]
    for u, p, vh in cases:
        try:
            with connect(u, p, vh) as conn:
                conn.channel()
        except (
            amqp.exceptions.AccessRefused,
            amqp.exceptions.NotAllowed,
            amqp.exceptions.ConnectionForced,
        ) as exc:
            print(f"refused as expected: user={u} vhost={vh}: {type(exc).__name__}")
        else:
            sys.exit(f"NOT refused: user={u} vhost={vh}")
else:
    sys.exit(f"unknown mode {mode}")
