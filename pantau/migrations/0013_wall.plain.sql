-- The wall on plain PostgreSQL: indexes for the wall's reads of the rollup tables. TimescaleDB
-- makes the same ones on its continuous aggregates by itself: one per GROUP BY column with the
-- bucket ((device_id, bucket), (metric, bucket)) and the bucket index of a hypertable.
-- Time series panels ask one metric over a time range, for every device (series_1m, series_1h);
-- the pipeline counts the last minutes' rollups of every device.
CREATE INDEX readings_1m_metric_bucket_idx ON readings_1m (metric, bucket);
CREATE INDEX readings_1m_bucket_idx ON readings_1m (bucket);
CREATE INDEX readings_1h_metric_bucket_idx ON readings_1h (metric, bucket);
