-- The wall benchmark's baseline (tests/bench/test_wall_bench.py): the views and functions the
-- tuning of migration 0013 replaced, as they were, in a schema of their own, timed in the same
-- run as today's: rainfall summing a day of raw readings per gauge, availability with the
-- per-device subqueries of the report's former query (devices/outages/availability.py).
CREATE SCHEMA wall_before;

CREATE VIEW wall_before.rainfall AS
SELECT s.device_id, s.name, s.kecamatan, s.kecamatan_name, s.state, s.latitude, s.longitude,
       r.mm_1h, wall.rain_class_hour(r.mm_1h) AS class_1h,
       r.mm_24h, wall.rain_class_day(r.mm_24h) AS class_24h,
       r.last_time AS time
FROM wall.device_state s
CROSS JOIN LATERAL (
    SELECT coalesce(sum(x.value) FILTER (WHERE x.time > now() - interval '1 hour'), 0)
               AS mm_1h,
           coalesce(sum(x.value), 0) AS mm_24h,
           max(x.time) AS last_time
    FROM readings x
    WHERE x.device_id = s.device_id AND x.metric = 'rain_mm'
      AND x.time > now() - interval '1 day'
) r
WHERE s.device_type = 'rain_gauge';

CREATE FUNCTION wall_before.device_availability_detail(p_from timestamptz, p_to timestamptz)
RETURNS TABLE (
    device_id text, name text, device_type text, type_name text, kecamatan text,
    kecamatan_name text, pillar text, pillar_name text, status text, outages bigint,
    registered_seconds float8, expected_seconds float8, down_seconds float8, availability float8
)
LANGUAGE sql STABLE STRICT SECURITY DEFINER SET search_path = pg_catalog, public, pg_temp AS $$
    WITH period AS (
        SELECT CASE WHEN p_from < least(p_to, now())
                    THEN tstzrange(p_from, least(p_to, now())) ELSE 'empty' END AS span
    ), dev AS (
        SELECT d.device_id, coalesce(d.name, d.device_id) AS name, d.device_type, d.kecamatan,
               coalesce(d.pillar, t.pillar) AS pillar, d.status,
               coalesce(t.name_id, d.device_type) AS type_name,
               coalesce(k.name, d.kecamatan) AS kecamatan_name,
               coalesce(p.name_id, coalesce(d.pillar, t.pillar)) AS pillar_name,
               tstzmultirange(tstzrange(d.created_at,
                                        greatest(d.created_at, coalesce(r.at, 'infinity'))))
                   * tstzmultirange(period.span) AS lifetime,
               period.span
        FROM period
        CROSS JOIN devices d
        LEFT JOIN device_types t ON t.id = d.device_type
        LEFT JOIN kecamatan k ON k.id = d.kecamatan
        LEFT JOIN pillars p ON p.id = coalesce(d.pillar, t.pillar)
        LEFT JOIN LATERAL (
            SELECT coalesce((SELECT max(a.at) FROM audit_log a
                             WHERE a.entity = 'device' AND a.entity_id = d.device_id
                               AND a.after ->> 'status' = 'retired'
                               AND a.before ->> 'status' IS DISTINCT FROM 'retired'),
                            d.updated_at) AS at
            WHERE d.status = 'retired'
        ) r ON true
        WHERE d.created_at < upper(period.span)
    ), judged AS (
        SELECT dev.*,
               dev.lifetime - coalesce(
                   (SELECT range_agg(tstzrange(w.starts_at, coalesce(w.ends_at, 'infinity')))
                    FROM maintenance_windows w
                    WHERE (w.device_id = dev.device_id OR w.kecamatan = dev.kecamatan)
                      AND w.starts_at < upper(dev.span)
                      AND tstzrange(w.starts_at, coalesce(w.ends_at, 'infinity')) && dev.span),
                   '{}'::tstzmultirange) AS expected,
               o.down, o.outages
        FROM dev
        CROSS JOIN LATERAL (
            SELECT coalesce(range_agg(tstzrange(o.started_at, coalesce(o.ended_at, 'infinity'))),
                            '{}'::tstzmultirange) AS down,
                   count(*) AS outages
            FROM outages o
            WHERE o.kind = 'device' AND o.device_id = dev.device_id
              AND o.started_at < upper(dev.span)
              AND tstzrange(o.started_at, coalesce(o.ended_at, 'infinity')) && dev.span
        ) o
        WHERE NOT isempty(dev.lifetime)
    ), seconds AS (
        SELECT j.*,
               (SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)
                FROM unnest(j.lifetime) r)::float8 AS registered_seconds,
               (SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)
                FROM unnest(j.expected) r)::float8 AS expected_seconds,
               (SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)
                FROM unnest(j.expected * j.down) r)::float8 AS down_seconds
        FROM judged j
    )
    SELECT s.device_id, s.name, s.device_type, s.type_name, s.kecamatan, s.kecamatan_name,
           s.pillar, s.pillar_name, s.status, s.outages, s.registered_seconds,
           s.expected_seconds, s.down_seconds,
           CASE WHEN s.expected_seconds > 0
                THEN 1 - s.down_seconds / s.expected_seconds END AS availability
    FROM seconds s
$$;

CREATE FUNCTION wall_before.availability(p_from timestamptz, p_to timestamptz, p_by text)
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
        FROM wall_before.device_availability_detail(p_from, p_to) a;
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
        FROM wall_before.device_availability_detail(p_from, p_to) a
    ) g
    GROUP BY g.grp, coalesce(g.label, g.grp, '(tanpa)')
    ORDER BY 2, 1;
END
$$;

GRANT USAGE ON SCHEMA wall_before TO pantau_wall;
GRANT SELECT ON ALL TABLES IN SCHEMA wall_before TO pantau_wall;
