-- Liveness, outages, maintenance windows and the alert outbox (issue 9). Same SQL for both
-- storage flavors. Liveness runs on arrival times (device_last_seen.last_received_at), never on
-- a device's own clock. One detector at a time (advisory lock) writes device_liveness and
-- outages; an outage's alert events are rows of alert_outbox written in the same transaction,
-- delivered by the delivery worker, one row per event and receiver.

-- What a device (or a camera probe) says of itself, and what the detector has concluded.
CREATE TABLE device_liveness (
    device_id       text        PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    -- unknown: never judged; paused: not active or in a maintenance window (never alerts)
    state           text        NOT NULL DEFAULT 'unknown'
                                CHECK (state IN ('unknown', 'up', 'late', 'down', 'paused')),
    cause           text,                    -- why down: silent, offline, frozen, black, ...
    since           timestamptz NOT NULL DEFAULT now(),
    -- reported by a status topic or a camera probe (pantau_report_status): 'up' or 'down'
    reported_state  text        CHECK (reported_state IN ('up', 'down')),
    reported_cause  text,
    reported_at     timestamptz,
    -- learned from arrivals, for a device whose registry interval is unset
    learned_interval_seconds double precision,
    last_arrival_at timestamptz,             -- the last arrival a detector pass saw
    recovering_since timestamptz             -- down, but reporting again since (flap damping)
);

-- Planned work: the device (or every device of the kecamatan) never alerts inside a window,
-- and the window's time is left out of availability. A device set to `maintenance` in the
-- registry gets an open window (ends_at NULL) until it is active again.
CREATE TABLE maintenance_windows (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id  text        REFERENCES devices ON DELETE CASCADE,
    kecamatan  text        REFERENCES kecamatan,
    starts_at  timestamptz NOT NULL,
    ends_at    timestamptz,
    reason     text        NOT NULL DEFAULT '',
    created_by text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (num_nonnulls(device_id, kecamatan) = 1),
    CHECK (ends_at IS NULL OR ends_at > starts_at)
);
CREATE INDEX maintenance_windows_device_idx ON maintenance_windows (device_id, starts_at);
CREATE INDEX maintenance_windows_kecamatan_idx ON maintenance_windows (kecamatan, starts_at);

-- Every outage and value alarm, open (ended_at NULL) or closed: the history.
CREATE TABLE outages (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        text        NOT NULL CHECK (kind IN ('device', 'area', 'alarm')),
    device_id   text        REFERENCES devices ON DELETE CASCADE,   -- device and alarm
    kecamatan   text        NOT NULL REFERENCES kecamatan,
    device_type text,
    pillar      text,
    metric      text,                        -- alarm: the metric judged
    level       text,                        -- alarm: the level's name, e.g. 'Siaga 2'
    cause       text        NOT NULL,        -- silent, offline, frozen, ...; 'area'; the level
    severity    text        NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    parent_id   bigint      REFERENCES outages,  -- a device outage grouped under its area's
    detail      jsonb       NOT NULL DEFAULT '{}',  -- area: down, total, share; alarm: value
    CHECK (ended_at IS NULL OR ended_at >= started_at),
    CHECK ((kind = 'area') = (device_id IS NULL))
);
CREATE UNIQUE INDEX outages_open_device_idx ON outages (device_id)
    WHERE kind = 'device' AND ended_at IS NULL;
CREATE UNIQUE INDEX outages_open_area_idx ON outages (kecamatan)
    WHERE kind = 'area' AND ended_at IS NULL;
CREATE UNIQUE INDEX outages_open_alarm_idx ON outages (device_id, metric)
    WHERE kind = 'alarm' AND ended_at IS NULL;
CREATE INDEX outages_started_idx ON outages (started_at DESC);
CREATE INDEX outages_device_idx ON outages (device_id, started_at);
CREATE INDEX outages_parent_idx ON outages (parent_id) WHERE parent_id IS NOT NULL;

-- One row per event (raised, resolved) and receiver ('alertmanager' or a webhook's name): a
-- receiver that fails is retried alone, and an event reaches a receiver at most once
-- (event_id is the idempotency key a webhook receiver sees).
CREATE TABLE alert_outbox (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    outage_id       bigint      NOT NULL REFERENCES outages ON DELETE CASCADE,
    event           text        NOT NULL CHECK (event IN ('raised', 'resolved')),
    receiver        text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- grouped: a device outage under an area outage, announced by the area's event instead
    status          text        NOT NULL DEFAULT 'pending'
                                CHECK (status IN ('pending', 'delivered', 'grouped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    last_error      text,
    UNIQUE (outage_id, event, receiver)
);
CREATE INDEX alert_outbox_due_idx ON alert_outbox (next_attempt_at) WHERE status = 'pending';

-- The cross-domain interface for liveness: a status topic (ingest) or a camera probe (streams)
-- says a device is up or down, with a cause, at a time. Ignored for unregistered devices and
-- for a report older than the one kept. The detector is woken at once (NOTIFY).
CREATE FUNCTION pantau_report_status(p_device text, p_up boolean, p_cause text, p_at timestamptz)
RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
    kept boolean;
BEGIN
    INSERT INTO device_liveness AS l (device_id, reported_state, reported_cause, reported_at)
    SELECT p_device, CASE WHEN p_up THEN 'up' ELSE 'down' END, p_cause, p_at
    FROM devices WHERE device_id = p_device
    ON CONFLICT (device_id) DO UPDATE
        SET reported_state = EXCLUDED.reported_state,
            reported_cause = EXCLUDED.reported_cause,
            reported_at = EXCLUDED.reported_at
        WHERE l.reported_at IS NULL OR l.reported_at <= EXCLUDED.reported_at;
    kept := FOUND;
    IF kept THEN
        PERFORM pg_notify('pantau_liveness', p_device);
    END IF;
    RETURN kept;
END
$$;
