-- Plain PostgreSQL has no compression: its rollup readings_1m is kept in daily partitions that
-- retention drops with the readings' (pantau/storage.py), readings_1h is a small table kept.
-- Nothing to change; the TimescaleDB flavor compresses its continuous aggregates.
SELECT 1;
