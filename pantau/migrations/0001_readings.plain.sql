-- Readings on plain PostgreSQL: native range partitions by UTC day, created ahead and dropped by
-- retention (pantau_ensure_partitions / pantau_drop_partitions, run by Pantau's storage worker),
-- and rollup tables refreshed by Pantau (pantau_refresh_rollups) with the same columns as the
-- TimescaleDB continuous aggregates, so dashboards query both alike.

CREATE TABLE readings (
    time      timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    value     double precision NOT NULL,
    CONSTRAINT readings_device_metric_time_key UNIQUE (device_id, metric, time)
) PARTITION BY RANGE (time);

CREATE TABLE readings_1m (
    bucket    timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    samples   bigint           NOT NULL,
    avg       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    CONSTRAINT readings_1m_pkey PRIMARY KEY (device_id, metric, bucket)
) PARTITION BY RANGE (bucket);

-- One hour rollups are small and kept beyond raw retention for long availability reports.
CREATE TABLE readings_1h (
    bucket    timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    samples   bigint           NOT NULL,
    avg       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    CONSTRAINT readings_1h_pkey PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_1h_bucket_idx ON readings_1h (bucket);

CREATE FUNCTION pantau_partition_name(p_parent text, p_day date) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_parent || '_p' || to_char(p_day, 'YYYYMMDD')
$$;

-- Create the daily partitions of p_parent for every UTC day from p_from to p_to inclusive.
CREATE FUNCTION pantau_ensure_partitions(p_parent text, p_from date, p_to date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    day     date;
    part    text;
    created integer := 0;
BEGIN
    FOR day IN SELECT generate_series(p_from, p_to, interval '1 day')::date LOOP
        part := pantau_partition_name(p_parent, day);
        IF to_regclass(part) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                part, p_parent,
                day::timestamp AT TIME ZONE 'UTC', (day + 1)::timestamp AT TIME ZONE 'UTC');
            created := created + 1;
        END IF;
    END LOOP;
    RETURN created;
END
$$;

-- Drop the daily partitions of p_parent whose whole day lies before p_before.
CREATE FUNCTION pantau_drop_partitions(p_parent text, p_before date) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    part    text;
    dropped integer := 0;
BEGIN
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = p_parent::regclass
          AND c.relname ~ ('^' || p_parent || '_p[0-9]{8}$')
          AND to_date(right(c.relname, 8), 'YYYYMMDD') < p_before
        ORDER BY c.relname
    LOOP
        EXECUTE format('DROP TABLE %I', part);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

-- Recompute the 1 minute rollups of readings in [p_from, p_to) and, from them, the hourly ones.
CREATE FUNCTION pantau_refresh_rollups(p_from timestamptz, p_to timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    from_1m timestamptz := date_trunc('minute', p_from, 'UTC');
    from_1h timestamptz := date_trunc('hour', p_from, 'UTC');
BEGIN
    PERFORM pantau_ensure_partitions(
        'readings_1m', (from_1h AT TIME ZONE 'UTC')::date, (p_to AT TIME ZONE 'UTC')::date);

    INSERT INTO readings_1m AS r (bucket, device_id, metric, samples, avg, min, max)
    SELECT date_trunc('minute', time, 'UTC'), device_id, metric,
           count(*), avg(value), min(value), max(value)
    FROM readings
    WHERE time >= from_1m AND time < p_to
    GROUP BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE
        SET samples = EXCLUDED.samples, avg = EXCLUDED.avg,
            min = EXCLUDED.min, max = EXCLUDED.max
        WHERE (r.samples, r.avg, r.min, r.max)
              IS DISTINCT FROM (EXCLUDED.samples, EXCLUDED.avg, EXCLUDED.min, EXCLUDED.max);

    INSERT INTO readings_1h AS r (bucket, device_id, metric, samples, avg, min, max)
    SELECT date_trunc('hour', bucket, 'UTC'), device_id, metric,
           sum(samples), sum(avg * samples) / sum(samples), min(min), max(max)
    FROM readings_1m
    WHERE bucket >= from_1h AND bucket < p_to
    GROUP BY 1, 2, 3
    ON CONFLICT (device_id, metric, bucket) DO UPDATE
        SET samples = EXCLUDED.samples, avg = EXCLUDED.avg,
            min = EXCLUDED.min, max = EXCLUDED.max
        WHERE (r.samples, r.avg, r.min, r.max)
              IS DISTINCT FROM (EXCLUDED.samples, EXCLUDED.avg, EXCLUDED.min, EXCLUDED.max);
END
$$;
