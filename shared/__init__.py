"""Code every Clientela service needs: events, Kafka helpers, outbox, idempotent consumer, tenant auth.

No service tables and no business logic live here (see ../README.md, "Layout").
"""
