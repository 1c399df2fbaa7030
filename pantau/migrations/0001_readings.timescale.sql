-- Readings on TimescaleDB: a hypertable in 1-day chunks, compressed after 7 days (segment by
-- device), retention applied by Pantau at start from storage.retention_days, and continuous
-- aggregates with the same columns as the plain path's rollup tables.
-- Not executable on the build machines (no TimescaleDB there): exercised by deploy/.

CREATE TABLE readings (
    time      timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    value     double precision NOT NULL,
    CONSTRAINT readings_device_metric_time_key UNIQUE (device_id, metric, time)
);
SELECT create_hypertable('readings', 'time',
                         chunk_time_interval => INTERVAL '1 day',
                         create_default_indexes => false);

ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id',
    timescaledb.compress_orderby = 'metric, time DESC'
);
SELECT add_compression_policy('readings', INTERVAL '7 days');

CREATE MATERIALIZED VIEW readings_1m WITH (timescaledb.continuous) AS
    SELECT time_bucket(INTERVAL '1 minute', time) AS bucket, device_id, metric,
           count(*) AS samples, avg(value) AS avg, min(value) AS min, max(value) AS max
    FROM readings
    GROUP BY bucket, device_id, metric
    WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1m',
    start_offset => INTERVAL '3 hours', end_offset => INTERVAL '1 minute',
    schedule_interval => INTERVAL '1 minute');

CREATE MATERIALIZED VIEW readings_1h WITH (timescaledb.continuous) AS
    SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, device_id, metric,
           count(*) AS samples, avg(value) AS avg, min(value) AS min, max(value) AS max
    FROM readings
    GROUP BY bucket, device_id, metric
    WITH NO DATA;
SELECT add_continuous_aggregate_policy('readings_1h',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes');
