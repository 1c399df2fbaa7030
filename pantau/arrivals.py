"""A device's data arrived: the one statement every writer (ingestion, camera probes) records it
with in `device_last_seen`, so the outage detector judges every device alike."""

from __future__ import annotations

# Parameters: device ids (sorted, so concurrent writers lock their rows in the same order) and
# each one's newest reading time. The arrival is the transaction's now(); the reading time only
# moves forward.
RECORD_ARRIVALS = """
INSERT INTO device_last_seen AS s (device_id, last_reading_at, last_received_at)
SELECT device_id, last_reading_at, now()
FROM unnest(%s::text[], %s::timestamptz[]) AS u (device_id, last_reading_at)
ON CONFLICT (device_id) DO UPDATE
    SET last_reading_at = GREATEST(s.last_reading_at, EXCLUDED.last_reading_at),
        last_received_at = EXCLUDED.last_received_at
"""
