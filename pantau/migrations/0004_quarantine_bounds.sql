-- Quarantine that cannot fill the disk, and one row per message.
-- `digest` is SHA-256 of topic, a NUL byte and the payload's own SHA-256: a redelivered or
-- replayed message finds its row and counts a repeat instead of inserting another. A payload
-- over ingest.max_payload_bytes keeps only its first 4 KiB; `payload_size` and `payload_sha256`
-- describe the whole. `source` is the device the topic names, or the topic itself.
-- `repeated_at` keeps the receive time of each repeat (the first 1,000): identical bytes are
-- several readings when their time is the receive time, and a replay writes each of them.
ALTER TABLE quarantine
    ADD COLUMN digest           bytea,
    ADD COLUMN source           text    NOT NULL DEFAULT '',
    ADD COLUMN payload_size     bigint,
    ADD COLUMN payload_sha256   bytea,
    ADD COLUMN repeats          integer NOT NULL DEFAULT 0,
    ADD COLUMN repeated_at      timestamptz[] NOT NULL DEFAULT '{}',
    ADD COLUMN last_received_at timestamptz;

UPDATE quarantine SET
    source = topic,
    payload_size = octet_length(payload),
    payload_sha256 = sha256(payload),
    digest = sha256(convert_to(topic, 'UTF8') || '\x00'::bytea || sha256(payload));

-- The receive times of a row's repeats: the distinct ones, its own first time left out, in
-- order, at most 1,000 (a spooled batch replayed twice brings the same times again).
CREATE FUNCTION pantau_repeat_times(first timestamptz, kept timestamptz[], more timestamptz[])
RETURNS timestamptz[] LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce((array_agg(t ORDER BY t))[1:1000], '{}')
    FROM (SELECT DISTINCT t FROM unnest(kept || more) AS u (t) WHERE t <> first) AS d
$$;

-- Rows inserted again by redeliveries before this migration: keep the first, count the others.
WITH ranked AS (
    SELECT id, first_value(id) OVER (PARTITION BY digest ORDER BY id) AS keep FROM quarantine
), gone AS (
    DELETE FROM quarantine q USING ranked r
    WHERE q.id = r.id AND r.id <> r.keep
    RETURNING r.keep, q.received_at
)
UPDATE quarantine q
SET repeats = q.repeats + g.n, repeated_at = pantau_repeat_times(q.received_at, '{}', g.times)
FROM (
    SELECT keep, count(*) AS n, array_agg(received_at) AS times
    FROM gone GROUP BY keep
) AS g
WHERE q.id = g.keep;

ALTER TABLE quarantine
    ALTER COLUMN digest SET NOT NULL,
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL;
CREATE UNIQUE INDEX quarantine_digest_idx ON quarantine (digest);

-- Rows inserted without them (by hand, or by code that predates them) get the same values.
CREATE FUNCTION pantau_quarantine_defaults() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.payload_size := coalesce(NEW.payload_size, octet_length(NEW.payload));
    NEW.payload_sha256 := coalesce(NEW.payload_sha256, sha256(NEW.payload));
    NEW.digest := coalesce(
        NEW.digest, sha256(convert_to(NEW.topic, 'UTF8') || '\x00'::bytea || NEW.payload_sha256)
    );
    IF NEW.source = '' THEN
        NEW.source := NEW.topic;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER quarantine_defaults BEFORE INSERT ON quarantine
    FOR EACH ROW EXECUTE FUNCTION pantau_quarantine_defaults();

-- Per source (device or topic) and UTC hour: how many payloads were kept whole (at most
-- ingest.quarantine_max_per_source_hour), how many more were only counted (by reason), and how
-- many kept ones the size cap (ingest.quarantine_max_bytes) deleted later.
CREATE TABLE quarantine_hourly (
    source           text        NOT NULL,
    hour             timestamptz NOT NULL,
    kept             integer     NOT NULL DEFAULT 0,
    summarised       bigint      NOT NULL DEFAULT 0,
    summarised_bytes bigint      NOT NULL DEFAULT 0,
    reasons          jsonb       NOT NULL DEFAULT '{}',
    dropped          bigint      NOT NULL DEFAULT 0,
    last_at          timestamptz,
    PRIMARY KEY (source, hour)
);
CREATE INDEX quarantine_hourly_hour_idx ON quarantine_hourly (hour);
