-- The wall's questions, answered once (issue 11): views and functions in the schema `wall`.
-- Grafana's panels and Pantau's own /wall page both read them, through the read-only role
-- `pantau_wall`, so the two walls never disagree. Same SQL for both storage flavors (the rollups
-- readings_1m / readings_1h have the same columns on both; 0013_wall.plain.sql adds the indexes
-- the rollup tables need, which TimescaleDB's continuous aggregates have already). Codes (state,
-- cause, severity) come with their words in Bahasa Indonesia; colours are the readers' business.

CREATE SCHEMA wall;

-- Each camera's snapshot is also served at a capability URL (/wall/cameras/{id}/snapshot.jpg
-- ?key=...), so a Grafana panel shows it without any API token in the dashboard. 122 random
-- bits; rotate by setting a new value.
ALTER TABLE cameras
    ADD COLUMN snapshot_key text NOT NULL DEFAULT replace(gen_random_uuid()::text, '-', '');

-- -- words -----------------------------------------------------------------------------------

CREATE FUNCTION wall.state_label(p_state text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_state
        WHEN 'up' THEN 'Normal'
        WHEN 'late' THEN 'Terlambat'
        WHEN 'down' THEN 'Mati'
        WHEN 'paused' THEN 'Pemeliharaan'
        WHEN 'unknown' THEN 'Belum ada data'
        WHEN 'area' THEN 'Gangguan wilayah'
        WHEN 'empty' THEN 'Tanpa perangkat'
        ELSE p_state
    END
$$;

-- A cause as an operator reads it: 'offline:auth' -> 'luring: kata sandi ditolak'.
CREATE FUNCTION wall.cause_label(p_cause text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE split_part(p_cause, ':', 1)
        WHEN 'silent' THEN 'tidak mengirim data'
        WHEN 'offline' THEN 'luring'
        WHEN 'frozen' THEN 'gambar beku'
        WHEN 'black' THEN 'gambar hitam'
        WHEN 'covered' THEN 'lensa tertutup'
        WHEN 'blurred' THEN 'gambar buram'
        WHEN 'area' THEN 'gangguan wilayah'
        ELSE p_cause
    END
    || CASE split_part(p_cause, ':', 2)
        WHEN '' THEN ''
        WHEN 'refused' THEN ': koneksi ditolak'
        WHEN 'auth' THEN ': kata sandi ditolak'
        WHEN 'not_found' THEN ': alamat aliran tidak ditemukan'
        WHEN 'timeout' THEN ': tidak menjawab'
        WHEN 'no_video' THEN ': tidak ada video'
        WHEN 'stalled' THEN ': aliran macet'
        WHEN 'ended' THEN ': aliran berhenti'
        WHEN 'error' THEN ': kesalahan aliran'
        ELSE ': ' || split_part(p_cause, ':', 2)
    END
$$;

CREATE FUNCTION wall.severity_label(p_severity text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_severity
        WHEN 'critical' THEN 'Kritis'
        WHEN 'warning' THEN 'Peringatan'
        WHEN 'info' THEN 'Info'
        ELSE p_severity
    END
$$;

-- ISPU (P.14/MENLHK/SETJEN/KUM.1/7/2020) category of a PM2.5 concentration, ug/m3.
CREATE FUNCTION wall.ispu_pm25(p_value double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_value IS NULL THEN NULL
        WHEN p_value <= 15.5 THEN 'Baik'
        WHEN p_value <= 55.4 THEN 'Sedang'
        WHEN p_value <= 150.4 THEN 'Tidak Sehat'
        WHEN p_value <= 250.4 THEN 'Sangat Tidak Sehat'
        ELSE 'Berbahaya'
    END
$$;

-- The category's colour as ISPU names it (hijau, biru, kuning, merah, hitam).
CREATE FUNCTION wall.ispu_colour(p_category text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_category
        WHEN 'Baik' THEN 'green'
        WHEN 'Sedang' THEN 'blue'
        WHEN 'Tidak Sehat' THEN 'yellow'
        WHEN 'Sangat Tidak Sehat' THEN 'red'
        WHEN 'Berbahaya' THEN 'black'
    END
$$;

-- BMKG's rain intensity class of a rain sum over one hour or one day, mm.
CREATE FUNCTION wall.rain_class_hour(p_mm double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_mm IS NULL THEN NULL
        WHEN p_mm < 1 THEN 'Tidak hujan / sangat ringan'
        WHEN p_mm < 5 THEN 'Ringan'
        WHEN p_mm < 10 THEN 'Sedang'
        WHEN p_mm <= 20 THEN 'Lebat'
        ELSE 'Sangat lebat'
    END
$$;

CREATE FUNCTION wall.rain_class_day(p_mm double precision) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE
        WHEN p_mm IS NULL THEN NULL
        WHEN p_mm < 0.5 THEN 'Tidak hujan'
        WHEN p_mm < 20 THEN 'Ringan'
        WHEN p_mm < 50 THEN 'Sedang'
        WHEN p_mm < 100 THEN 'Lebat'
        WHEN p_mm <= 150 THEN 'Sangat lebat'
        ELSE 'Ekstrem'
    END
$$;

-- -- devices and their state -------------------------------------------------------------------

-- Every device not retired, where it is and what the detector last concluded of it.
-- state: up | late | down | paused | unknown (never judged).
CREATE VIEW wall.device_state AS
SELECT d.device_id,
       coalesce(d.name, d.device_id) AS name,
       d.device_type,
       coalesce(t.name_id, d.device_type) AS type_name,
       coalesce(d.pillar, t.pillar) AS pillar,
       coalesce(p.name_id, coalesce(d.pillar, t.pillar)) AS pillar_name,
       d.kecamatan,
       coalesce(k.name, d.kecamatan) AS kecamatan_name,
       d.latitude,
       d.longitude,
       coalesce(l.state, 'unknown') AS state,
       wall.state_label(coalesce(l.state, 'unknown')) AS state_label,
       l.cause,
       wall.cause_label(l.cause) AS cause_label,
       l.since,
       s.last_received_at AS last_seen
FROM devices d
LEFT JOIN device_types t ON t.id = d.device_type
LEFT JOIN pillars p ON p.id = coalesce(d.pillar, t.pillar)
LEFT JOIN kecamatan k ON k.id = d.kecamatan
LEFT JOIN device_liveness l ON l.device_id = d.device_id
LEFT JOIN device_last_seen s ON s.device_id = d.device_id
WHERE d.status <> 'retired';

-- The big counts: one row.
CREATE VIEW wall.status_totals AS
SELECT count(*) AS total,
       count(*) FILTER (WHERE s.state = 'up') AS up,
       count(*) FILTER (WHERE s.state = 'late') AS late,
       count(*) FILTER (WHERE s.state = 'down') AS down,
       count(*) FILTER (WHERE s.state = 'paused') AS paused,
       count(*) FILTER (WHERE s.state = 'unknown') AS unknown,
       (SELECT count(*) FROM outages o WHERE o.kind = 'area' AND o.ended_at IS NULL)
           AS area_outages,
       (SELECT count(*) FROM outages o WHERE o.kind = 'alarm' AND o.ended_at IS NULL)
           AS alarms
FROM wall.device_state s;

-- Per pillar, in the programme's order (governance ... living); pillars without devices too.
CREATE VIEW wall.status_by_pillar AS
SELECT p.id AS pillar,
       p.name_id AS pillar_name,
       array_position(
           ARRAY['governance', 'branding', 'economy', 'society', 'environment', 'living'], p.id)
           AS sort,
       count(s.device_id) AS total,
       count(s.device_id) FILTER (WHERE s.state = 'up') AS up,
       count(s.device_id) FILTER (WHERE s.state = 'late') AS late,
       count(s.device_id) FILTER (WHERE s.state = 'down') AS down,
       count(s.device_id) FILTER (WHERE s.state = 'paused') AS paused,
       count(s.device_id) FILTER (WHERE s.state = 'unknown') AS unknown
FROM pillars p
LEFT JOIN wall.device_state s ON s.pillar = p.id
GROUP BY p.id, p.name_id;

-- Per device type (for the Evaluasi and Kecamatan dashboards).
CREATE VIEW wall.status_by_type AS
SELECT t.id AS device_type,
       t.name_id AS type_name,
       t.pillar,
       count(s.device_id) AS total,
       count(s.device_id) FILTER (WHERE s.state = 'up') AS up,
       count(s.device_id) FILTER (WHERE s.state = 'late') AS late,
       count(s.device_id) FILTER (WHERE s.state = 'down') AS down,
       count(s.device_id) FILTER (WHERE s.state = 'paused') AS paused,
       count(s.device_id) FILTER (WHERE s.state = 'unknown') AS unknown
FROM device_types t
LEFT JOIN wall.device_state s ON s.device_type = t.id
GROUP BY t.id, t.name_id, t.pillar;

-- Per kecamatan, all 23, with the state its tile shows: area (an open area outage), down (a
-- device down), late, up, unknown (only paused or never judged devices) or empty (no device).
CREATE VIEW wall.status_by_kecamatan AS
SELECT k.id AS kecamatan,
       k.name AS kecamatan_name,
       k.latitude,
       k.longitude,
       c.total, c.up, c.late, c.down, c.paused, c.unknown,
       a.id IS NOT NULL AS area_outage,
       a.started_at AS area_since,
       (SELECT count(*) FROM outages o
        WHERE o.kind = 'alarm' AND o.ended_at IS NULL AND o.kecamatan = k.id) AS alarms,
       st.state,
       wall.state_label(st.state) AS state_label
FROM kecamatan k
CROSS JOIN LATERAL (
    SELECT count(*) AS total,
           count(*) FILTER (WHERE s.state = 'up') AS up,
           count(*) FILTER (WHERE s.state = 'late') AS late,
           count(*) FILTER (WHERE s.state = 'down') AS down,
           count(*) FILTER (WHERE s.state = 'paused') AS paused,
           count(*) FILTER (WHERE s.state = 'unknown') AS unknown
    FROM wall.device_state s WHERE s.kecamatan = k.id
) c
LEFT JOIN outages a ON a.kind = 'area' AND a.ended_at IS NULL AND a.kecamatan = k.id
CROSS JOIN LATERAL (
    SELECT CASE
        WHEN a.id IS NOT NULL THEN 'area'
        WHEN c.down > 0 THEN 'down'
        WHEN c.late > 0 THEN 'late'
        WHEN c.total = 0 THEN 'empty'
        WHEN c.up > 0 THEN 'up'
        ELSE 'unknown'
    END AS state
) st;

-- -- outages and alarms ------------------------------------------------------------------------

-- Open device and area outages, area outages first, then the most severe and the oldest.
-- A device outage grouped under an area outage has parent_id set (a wall may leave it out).
CREATE VIEW wall.current_outages AS
SELECT o.id,
       o.kind,
       o.kecamatan,
       k.name AS kecamatan_name,
       o.device_id,
       coalesce(d.name, o.device_id) AS device_name,
       o.device_type,
       coalesce(t.name_id, o.device_type) AS type_name,
       o.pillar,
       o.cause,
       wall.cause_label(o.cause) AS cause_label,
       o.severity,
       wall.severity_label(o.severity) AS severity_label,
       o.started_at AS since,
       extract(epoch FROM now() - o.started_at)::bigint AS duration_seconds,
       (o.detail ->> 'down')::integer AS area_down,
       (o.detail ->> 'total')::integer AS area_total,
       o.parent_id,
       row_number() OVER (
           ORDER BY o.kind = 'area' DESC,
                    array_position(ARRAY['critical', 'warning', 'info'], o.severity),
                    o.started_at, o.id) AS sort
FROM outages o
JOIN kecamatan k ON k.id = o.kecamatan
LEFT JOIN devices d ON d.device_id = o.device_id
LEFT JOIN device_types t ON t.id = o.device_type
WHERE o.ended_at IS NULL AND o.kind IN ('device', 'area');

-- Open value alarms (a river over Siaga 3, PM2.5 unhealthy, heavy rain), the most severe first.
CREATE VIEW wall.active_alarms AS
SELECT o.id,
       o.device_id,
       coalesce(d.name, o.device_id) AS device_name,
       o.kecamatan,
       k.name AS kecamatan_name,
       o.device_type,
       o.metric,
       coalesce(m.label_id, o.metric) AS metric_label,
       m.unit,
       o.level,
       o.severity,
       wall.severity_label(o.severity) AS severity_label,
       (o.detail ->> 'value')::double precision AS value,
       (o.detail ->> 'raise_at')::double precision AS raise_at,
       o.started_at AS since,
       extract(epoch FROM now() - o.started_at)::bigint AS duration_seconds,
       row_number() OVER (
           ORDER BY array_position(ARRAY['critical', 'warning', 'info'], o.severity),
                    (o.detail ->> 'rank')::integer DESC NULLS LAST, o.started_at, o.id) AS sort
FROM outages o
JOIN kecamatan k ON k.id = o.kecamatan
LEFT JOIN devices d ON d.device_id = o.device_id
LEFT JOIN device_type_metrics m ON m.device_type = o.device_type AND m.metric = o.metric
WHERE o.ended_at IS NULL AND o.kind = 'alarm';

-- The alert levels that apply to each device and metric: the device's own where it has any
-- for the metric, else its type's (as the detector judges them, devices/outages/alarms.py).
CREATE VIEW wall.device_levels AS
SELECT d.device_id, l.metric, l.rank, l.name, l.severity, l.raise_at, l.clear_at,
       l.window_seconds, l.source
FROM devices d
JOIN device_alarm_levels l ON l.device_id = d.device_id
UNION ALL
SELECT d.device_id, l.metric, l.rank, l.name, l.severity, l.raise_at, l.clear_at,
       l.window_seconds, l.source
FROM devices d
JOIN alarm_levels l ON l.device_type = d.device_type
WHERE NOT EXISTS (SELECT 1 FROM device_alarm_levels o
                  WHERE o.device_id = d.device_id AND o.metric = l.metric);

-- -- values --------------------------------------------------------------------------------------

-- Each device's latest value of each of its type's metrics within the last day (a value older
-- than that is no value on a wall), with the alarm level it holds now.
CREATE VIEW wall.latest_values AS
SELECT s.device_id, s.name, s.device_type, s.type_name, s.kecamatan, s.kecamatan_name,
       s.latitude, s.longitude, s.state,
       m.metric,
       coalesce(m.label_id, m.metric) AS metric_label,
       m.unit,
       r.time,
       r.value,
       a.level,
       a.severity
FROM wall.device_state s
JOIN device_type_metrics m ON m.device_type = s.device_type
LEFT JOIN LATERAL (
    SELECT x.time, x.value FROM readings x
    WHERE x.device_id = s.device_id AND x.metric = m.metric
      AND x.time > now() - interval '1 day'
    ORDER BY x.time DESC LIMIT 1
) r ON true
LEFT JOIN outages a
    ON a.kind = 'alarm' AND a.ended_at IS NULL AND a.device_id = s.device_id
       AND a.metric = m.metric;

-- River and drainage gauges: the latest level against the gauge's own Siaga levels.
CREATE VIEW wall.flood_levels AS
SELECT v.device_id, v.name, v.kecamatan, v.kecamatan_name, v.state, v.latitude, v.longitude,
       v.time, v.value AS level_cm, v.level, v.severity,
       (SELECT jsonb_agg(jsonb_build_object('name', l.name, 'raise_at', l.raise_at,
                                            'severity', l.severity) ORDER BY l.rank)
        FROM wall.device_levels l
        WHERE l.device_id = v.device_id AND l.metric = v.metric) AS levels
FROM wall.latest_values v
WHERE v.device_type = 'water_level' AND v.metric = 'water_level_cm';

-- Air-quality stations: the latest PM2.5 and PM10 with the ISPU category and its colour.
CREATE VIEW wall.air_quality AS
SELECT s.device_id, s.name, s.kecamatan, s.kecamatan_name, s.state, s.latitude, s.longitude,
       p25.time, p25.value AS pm25, wall.ispu_pm25(p25.value) AS category,
       wall.ispu_colour(wall.ispu_pm25(p25.value)) AS colour,
       p10.value AS pm10
FROM wall.device_state s
LEFT JOIN wall.latest_values p25
    ON p25.device_id = s.device_id AND p25.metric = 'pm25_ugm3'
LEFT JOIN wall.latest_values p10
    ON p10.device_id = s.device_id AND p10.metric = 'pm10_ugm3'
WHERE s.device_type = 'air_quality';

-- Rain sums over the last hour and day read the rollups wherever they are complete, and raw
-- readings only at the window's edges: raw readings up to the first whole minute, 1 minute rollups up to
-- the first whole hour, 1 hour rollups up to 2 hours before this hour (TimescaleDB's policy
-- materializes an hour bucket within 1.5 h; Pantau's plain refresh within a minute), 1 minute
-- rollups up to 5 minutes ago, raw readings since. The same sum (to rounding) from a few dozen
-- rows per device: a rain gauge reporting every 10 s has 8,640 readings a day. Buckets are UTC
-- minutes and hours, as both flavors' rollups are (avg * samples is a bucket's sum). Each part
-- is read once for every device of the type (set-based: a lateral per device would plan every
-- daily partition once per device, and its cost estimate alone turns JIT compilation on).

-- Rain gauges: rain over the last hour and the last day (sums, as BMKG judges intensity).
CREATE VIEW wall.rainfall AS
SELECT s.device_id, s.name, s.kecamatan, s.kecamatan_name, s.state, s.latitude, s.longitude,
       coalesce(r.mm_1h, 0) AS mm_1h, wall.rain_class_hour(coalesce(r.mm_1h, 0)) AS class_1h,
       coalesce(r.mm_24h, 0) AS mm_24h, wall.rain_class_day(coalesce(r.mm_24h, 0)) AS class_24h,
       (SELECT max(x.time) FROM readings x
        WHERE x.device_id = s.device_id AND x.metric = 'rain_mm'
          AND x.time > now() - interval '1 day') AS time
FROM wall.device_state s
LEFT JOIN (
    SELECT p.device_id,
           sum(p.mm) FILTER (WHERE p.in_hour) AS mm_1h,
           sum(p.mm) FILTER (WHERE p.in_day) AS mm_24h
    FROM (
        SELECT now() - interval '1 day' AS day_from,
               date_bin('1 minute', now() - interval '1 day', '2000-01-01 00:00+00')
                   + interval '1 minute' AS day_minutes,  -- raw before, 1 minute rollups after
               date_bin('1 hour', now() - interval '1 day', '2000-01-01 00:00+00')
                   + interval '1 hour' AS day_hours,  -- 1 hour rollups after
               date_bin('1 hour', now(), '2000-01-01 00:00+00')
                   - interval '2 hours' AS hours_end,  -- 1 minute rollups after
               date_bin('1 minute', now(), '2000-01-01 00:00+00')
                   - interval '5 minutes' AS minutes_end,  -- raw after
               now() - interval '1 hour' AS hour_from,
               date_bin('1 minute', now() - interval '1 hour', '2000-01-01 00:00+00')
                   + interval '1 minute' AS hour_minutes,
               ARRAY(SELECT d.device_id FROM devices d WHERE d.device_type = 'rain_gauge')
                   AS gauges
    ) b
    CROSS JOIN LATERAL (
        SELECT x.device_id, x.value, false, true FROM readings x
        WHERE x.device_id = ANY (b.gauges) AND x.metric = 'rain_mm'
          AND x.time > b.day_from AND x.time < b.day_minutes
        UNION ALL
        SELECT r.device_id, r.avg * r.samples, false, true FROM readings_1m r
        WHERE r.metric = 'rain_mm' AND r.bucket >= b.day_minutes AND r.bucket < b.day_hours
        UNION ALL
        SELECT r.device_id, r.avg * r.samples, false, true FROM readings_1h r
        WHERE r.metric = 'rain_mm' AND r.bucket >= b.day_hours AND r.bucket < b.hours_end
        UNION ALL
        SELECT r.device_id, r.avg * r.samples, r.bucket >= b.hour_minutes, true
        FROM readings_1m r
        WHERE r.metric = 'rain_mm' AND r.bucket >= b.hours_end AND r.bucket < b.minutes_end
        UNION ALL  -- the last hour's first, partial minute (its bucket counts for the day)
        SELECT x.device_id, x.value, true, false FROM readings x
        WHERE x.device_id = ANY (b.gauges) AND x.metric = 'rain_mm'
          AND x.time > b.hour_from AND x.time < b.hour_minutes
        UNION ALL
        SELECT x.device_id, x.value, true, true FROM readings x
        WHERE x.device_id = ANY (b.gauges) AND x.metric = 'rain_mm'
          AND x.time >= b.minutes_end AND x.time > b.day_from
    ) p (device_id, mm, in_hour, in_day)
    GROUP BY p.device_id
) r ON r.device_id = s.device_id
WHERE s.device_type = 'rain_gauge';

-- Traffic counters: vehicles counted over the last hour. Raw readings, per counter: a counter
-- reports every minute to every 5 minutes, at most 60 readings an hour (through the rollups, as
-- rainfall does, was slower at these rates: 27 against 12 ms for 300 counters).
CREATE VIEW wall.traffic AS
SELECT s.device_id, s.name, s.kecamatan, s.kecamatan_name, s.state, s.latitude, s.longitude,
       r.vehicles_1h, r.last_time AS time
FROM wall.device_state s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(x.value), 0) AS vehicles_1h, max(x.time) AS last_time
    FROM readings x
    WHERE x.device_id = s.device_id AND x.metric = 'vehicles'
      AND x.time > now() - interval '1 hour'
) r
WHERE s.device_type = 'traffic_counter';

-- Rollups with the device's name and place, for time series panels ($__timeFilter(bucket)).
CREATE VIEW wall.series_1m AS
SELECT r.bucket, r.device_id, coalesce(d.name, r.device_id) AS name, d.device_type,
       d.kecamatan, r.metric, r.samples, r.avg, r.min, r.max
FROM readings_1m r
JOIN devices d ON d.device_id = r.device_id;

CREATE VIEW wall.series_1h AS
SELECT r.bucket, r.device_id, coalesce(d.name, r.device_id) AS name, d.device_type,
       d.kecamatan, r.metric, r.samples, r.avg, r.min, r.max
FROM readings_1h r
JOIN devices d ON d.device_id = r.device_id;

-- -- cameras ---------------------------------------------------------------------------------------

-- One tile per camera: its state (the detector's), the probe's last verdict on the picture, and
-- where its latest snapshot is (a path on Pantau's HTTP server, to prefix with its public URL).
CREATE VIEW wall.camera_tiles AS
SELECT s.device_id, s.name, s.kecamatan, s.kecamatan_name, s.state, s.state_label,
       s.cause, s.cause_label, s.since,
       c.enabled,
       h.state AS picture,
       h.reason,
       h.time AS checked_at,
       h.fps,
       h.bitrate_kbps,
       n.taken_at AS snapshot_at,
       extract(epoch FROM now() - n.taken_at)::bigint AS snapshot_age_seconds,
       '/wall/cameras/' || c.device_id || '/snapshot.jpg?key=' || c.snapshot_key
           AS snapshot_path
FROM wall.device_state s
JOIN cameras c ON c.device_id = s.device_id
LEFT JOIN LATERAL (
    SELECT x.time, x.state, x.reason, x.fps, x.bitrate_kbps FROM camera_health x
    WHERE x.device_id = c.device_id ORDER BY x.time DESC LIMIT 1
) h ON true
LEFT JOIN LATERAL (
    SELECT x.taken_at FROM camera_snapshots x
    WHERE x.device_id = c.device_id ORDER BY x.taken_at DESC LIMIT 1
) n ON true;

-- -- the pipeline ----------------------------------------------------------------------------------

-- What the database itself says of the pipeline (Prometheus says the rest): one row.
CREATE VIEW wall.pipeline AS
SELECT (SELECT max(last_received_at) FROM device_last_seen) AS last_arrival,
       (SELECT count(*) FROM device_last_seen
        WHERE last_received_at > now() - interval '5 minutes') AS devices_reporting_5m,
       (SELECT coalesce(sum(samples), 0) FROM readings_1m
        WHERE bucket >= now() - interval '5 minutes') AS readings_5m,
       (SELECT coalesce(sum(kept + summarised), 0) FROM quarantine_hourly
        WHERE hour >= date_trunc('hour', now()) - interval '1 hour') AS quarantined_2h,
       (SELECT count(*) FROM alert_outbox WHERE status = 'pending') AS alerts_pending,
       (SELECT count(*) FROM cameras WHERE enabled) AS cameras;

-- -- availability ----------------------------------------------------------------------------

-- Availability over [p_from, p_to), per device: the one definition, used by the evaluation report
-- (devices/outages/availability.py: the CLI, the HTML/CSV report, GET /api/v1/availability) and
-- by the wall, so they never disagree (README, "Availability and the evaluation report"):
-- - the period is cut at now (the future is neither up nor down);
-- - expected time: the period's part after the device was registered (created_at) and, for a
--   retired device, before it was retired (the audit entry that set it retired; its updated_at
--   when there is none), minus its maintenance windows and its kecamatan's;
-- - down time: its device outages (grouped under an area outage or not) inside the expected time;
-- - availability = 1 - down / expected, NULL when nothing was expected.
-- One row per device registered during the period, retired ones included. Beside the wall's
-- columns, what the report also prints: status, outages (device outages overlapping the period)
-- and registered_seconds.
-- SECURITY DEFINER: it reads devices, outages, maintenance_windows and audit_log, which
-- pantau_wall may not read; its search_path is fixed below (the schema of Pantau's tables, then
-- pg_temp), so a caller's search_path cannot put other tables in their place. Not executable by
-- PUBLIC: by pantau_wall (and its owner, the migrating user).
CREATE FUNCTION wall.device_availability_detail(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    device_id text, name text, device_type text, type_name text, kecamatan text,
    kecamatan_name text, pillar text, pillar_name text, status text, outages bigint,
    registered_seconds float8, expected_seconds float8, down_seconds float8, availability float8
)
LANGUAGE sql STABLE STRICT SECURITY DEFINER AS $$
    WITH period AS (
        SELECT CASE WHEN p_from < least(p_to, now())
                    THEN tstzrange(p_from, least(p_to, now())) ELSE 'empty' END AS span
    ), down AS (  -- per device, its outages overlapping the period (set-based: one pass)
        SELECT o.device_id,
               range_agg(tstzrange(o.started_at, coalesce(o.ended_at, 'infinity'))) AS down,
               count(*) AS outages
        FROM outages o, period
        WHERE o.kind = 'device' AND o.started_at < upper(period.span)
          AND tstzrange(o.started_at, coalesce(o.ended_at, 'infinity')) && period.span
        GROUP BY o.device_id
    ), windows AS (  -- maintenance windows overlapping the period, per device or kecamatan
        SELECT w.device_id, w.kecamatan,
               range_agg(tstzrange(w.starts_at, coalesce(w.ends_at, 'infinity'))) AS windows
        FROM maintenance_windows w, period
        WHERE w.starts_at < upper(period.span)
          AND tstzrange(w.starts_at, coalesce(w.ends_at, 'infinity')) && period.span
        GROUP BY w.device_id, w.kecamatan
    ), dev AS (
        SELECT d.device_id, coalesce(d.name, d.device_id) AS name, d.device_type, d.kecamatan,
               coalesce(d.pillar, t.pillar) AS pillar, d.status,
               coalesce(t.name_id, d.device_type) AS type_name,
               coalesce(k.name, d.kecamatan) AS kecamatan_name,
               coalesce(p.name_id, coalesce(d.pillar, t.pillar)) AS pillar_name,
               tstzmultirange(tstzrange(d.created_at, greatest(d.created_at, CASE
                   WHEN d.status = 'retired' THEN
                       coalesce((SELECT max(a.at) FROM audit_log a
                                 WHERE a.entity = 'device' AND a.entity_id = d.device_id
                                   AND a.after ->> 'status' = 'retired'
                                   AND a.before ->> 'status' IS DISTINCT FROM 'retired'),
                                d.updated_at)
                   ELSE 'infinity' END)))
                   * tstzmultirange(period.span) AS lifetime
        FROM period
        CROSS JOIN devices d
        LEFT JOIN device_types t ON t.id = d.device_type
        LEFT JOIN kecamatan k ON k.id = d.kecamatan
        LEFT JOIN pillars p ON p.id = coalesce(d.pillar, t.pillar)
        WHERE d.created_at < upper(period.span)
    ), judged AS MATERIALIZED (  -- once per device: its lifetime, expected and down time
        SELECT dev.*,
               dev.lifetime - coalesce(wd.windows, '{}') - coalesce(wk.windows, '{}')
                   AS expected,
               coalesce(o.down, '{}') AS down,
               coalesce(o.outages, 0) AS outages
        FROM dev
        LEFT JOIN down o ON o.device_id = dev.device_id
        LEFT JOIN windows wd ON wd.device_id = dev.device_id
        LEFT JOIN windows wk ON wk.kecamatan = dev.kecamatan
        WHERE NOT isempty(dev.lifetime)
    )
    SELECT j.device_id, j.name, j.device_type, j.type_name, j.kecamatan, j.kecamatan_name,
           j.pillar, j.pillar_name, j.status, j.outages, r.seconds, e.seconds, d.seconds,
           CASE WHEN e.seconds > 0 THEN 1 - d.seconds / e.seconds END
    FROM judged j
    CROSS JOIN LATERAL (SELECT coalesce(sum(extract(epoch FROM upper(x) - lower(x))), 0)::float8
                        FROM unnest(j.lifetime) x) r (seconds)
    CROSS JOIN LATERAL (SELECT coalesce(sum(extract(epoch FROM upper(x) - lower(x))), 0)::float8
                        FROM unnest(j.expected) x) e (seconds)
    CROSS JOIN LATERAL (SELECT coalesce(sum(extract(epoch FROM upper(x) - lower(x))), 0)::float8
                        FROM unnest(j.expected * j.down) x) d (seconds)
$$;

-- The wall's columns of the above.
CREATE FUNCTION wall.device_availability(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    device_id text, name text, device_type text, type_name text, kecamatan text,
    kecamatan_name text, pillar text, pillar_name text, expected_seconds float8,
    down_seconds float8, availability float8
)
LANGUAGE sql STABLE AS $$
    SELECT a.device_id, a.name, a.device_type, a.type_name, a.kecamatan, a.kecamatan_name,
           a.pillar, a.pillar_name, a.expected_seconds, a.down_seconds, a.availability
    FROM wall.device_availability_detail(p_from, p_to) a
$$;

-- Availability per pillar, kecamatan or device type ('pillar', 'kecamatan', 'type'), or over
-- every device ('all': one row, also when there is none): a group sums its devices' times, so a
-- device expected 24 h weighs twice one expected 12 h. grp is the pillar, kecamatan or type id
-- (NULL for devices without one; 'all'), label its name in Bahasa Indonesia; groups by label.
CREATE FUNCTION wall.availability(p_from timestamptz, p_to timestamptz, p_by text)
RETURNS TABLE (
    grp text, label text, devices bigint, expected_seconds float8, down_seconds float8,
    availability float8
)
LANGUAGE plpgsql STABLE AS $$
#variable_conflict use_column
BEGIN
    IF p_by IS NULL OR p_by NOT IN ('pillar', 'kecamatan', 'type', 'all') THEN
        RAISE EXCEPTION 'wall.availability: p_by is %, expected pillar, kecamatan, type or all',
            coalesce(quote_literal(p_by), 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_from IS NULL OR p_to IS NULL THEN
        RAISE EXCEPTION 'wall.availability: p_from and p_to must be times, not NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    IF p_by = 'all' THEN
        RETURN QUERY
        SELECT 'all'::text, 'Semua perangkat'::text, count(*),
               coalesce(sum(a.expected_seconds), 0)::float8,
               coalesce(sum(a.down_seconds), 0)::float8,
               CASE WHEN sum(a.expected_seconds) > 0
                    THEN 1 - sum(a.down_seconds) / sum(a.expected_seconds) END
        FROM wall.device_availability(p_from, p_to) a;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT g.grp, coalesce(g.label, g.grp, '(tanpa)'), count(*),
           sum(g.expected_seconds), sum(g.down_seconds),
           CASE WHEN sum(g.expected_seconds) > 0
                THEN 1 - sum(g.down_seconds) / sum(g.expected_seconds) END
    FROM (
        SELECT CASE p_by WHEN 'pillar' THEN a.pillar WHEN 'kecamatan' THEN a.kecamatan
                         ELSE a.device_type END AS grp,
               CASE p_by WHEN 'pillar' THEN a.pillar_name WHEN 'kecamatan' THEN a.kecamatan_name
                         ELSE a.type_name END AS label,
               a.expected_seconds, a.down_seconds
        FROM wall.device_availability(p_from, p_to) a
    ) g
    GROUP BY g.grp, coalesce(g.label, g.grp, '(tanpa)')
    ORDER BY 2, 1;
END
$$;

-- The definer's search_path: the schema Pantau's tables were created in (this migration's first
-- one on its search_path), then pg_temp last.
DO $$
BEGIN
    EXECUTE format(
        'ALTER FUNCTION wall.device_availability_detail(timestamptz, timestamptz)'
        ' SET search_path = pg_catalog, %I, pg_temp',
        (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = 'devices'::regclass));
END
$$;
REVOKE ALL ON FUNCTION wall.device_availability_detail(timestamptz, timestamptz) FROM PUBLIC;

-- -- the read-only role ----------------------------------------------------------------------------

-- Grafana's data source logs in as a role that is a member of pantau_wall; Pantau's /wall page
-- takes it with SET LOCAL ROLE. Roles are per cluster: created once, kept when it exists. A
-- migrating user without CREATEROLE gets a notice instead (create it by hand, see README).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pantau_wall') THEN
        BEGIN
            CREATE ROLE pantau_wall NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pantau_wall not created (no CREATEROLE): CREATE ROLE pantau_wall NOLOGIN';
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pantau_wall') THEN
        GRANT USAGE ON SCHEMA wall TO pantau_wall;
        GRANT SELECT ON ALL TABLES IN SCHEMA wall TO pantau_wall;
        GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA wall TO pantau_wall;
        EXECUTE format('GRANT pantau_wall TO %I', current_user);
    END IF;
END
$$;

-- -- grafana dashboards: ----------------------------------------------------------------------------

-- Per kecamatan and device type, every pair that has a device: the Kecamatan dashboard's counts
-- for the types chosen in its `tipe` variable, and the variable's options.
CREATE VIEW wall.status_by_kecamatan_type AS
SELECT s.kecamatan,
       s.kecamatan_name,
       s.device_type,
       s.type_name,
       count(*) AS total,
       count(*) FILTER (WHERE s.state = 'up') AS up,
       count(*) FILTER (WHERE s.state = 'late') AS late,
       count(*) FILTER (WHERE s.state = 'down') AS down,
       count(*) FILTER (WHERE s.state = 'paused') AS paused,
       count(*) FILTER (WHERE s.state = 'unknown') AS unknown
FROM wall.device_state s
GROUP BY s.kecamatan, s.kecamatan_name, s.device_type, s.type_name;

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pantau_wall') THEN
        GRANT SELECT ON wall.status_by_kecamatan_type TO pantau_wall;
    END IF;
END
$$;
