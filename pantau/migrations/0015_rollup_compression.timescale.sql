-- The continuous aggregates compressed like the readings. Without it the 1 minute aggregate is
-- most of TimescaleDB's storage (docs/capacity.md: 21.1 of 23.6 MB a series a year at one
-- reading every 5 minutes); compressed, 7.9x smaller (readings_1m) and 7.7x (readings_1h),
-- measured on simulator data with TimescaleDB 2.28.3. Each is compressed well past the window
-- its policy refreshes (3 hours, 3 days: migration 0001): what Pantau refreshes later for late
-- readings (pantau/storage.py) goes into compressed chunks, which TimescaleDB allows.
-- Retention of readings_1m follows storage.retention_days like the readings' (pantau/storage.py),
-- as the plain path drops its daily partitions; readings_1h is kept, as on the plain path.
-- Not executable on the build machines (no TimescaleDB there): tried by hand (docs/capacity.md).
ALTER MATERIALIZED VIEW readings_1m SET (timescaledb.compress = true);
SELECT add_compression_policy('readings_1m', compress_after => INTERVAL '7 days');
ALTER MATERIALIZED VIEW readings_1h SET (timescaledb.compress = true);
SELECT add_compression_policy('readings_1h', compress_after => INTERVAL '30 days');
