"""The delivery log read a page at a time, in id order (the JSON API's `/deliveries`)."""

from __future__ import annotations

from campaign.storage import store
from campaign.storage.db import Database

DeliveryRow = store.DeliveryRow


def page(db: Database, after_id: int, limit: int) -> list[DeliveryRow]:
    """At most `limit` deliveries with an id above `after_id`, lowest id first: a walk that
    starts from 0 and goes on from each page's last id meets every delivery exactly once."""
    with db.read() as session:
        return store.deliveries_after(session, after_id, limit)
