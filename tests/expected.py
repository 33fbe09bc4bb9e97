"""Answers the tests expect alike on loopback and through the lab's load balancer."""

from __future__ import annotations

from typing import Any

# GET /health with MongoDB, Redis and RabbitMQ all reachable.
HEALTHY: dict[str, Any] = {
    "status": "healthy",
    "services": {"mongodb": "connected", "redis": "connected", "rabbitmq": "connected"},
}
