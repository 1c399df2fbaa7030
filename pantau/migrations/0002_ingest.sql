-- Ingestion: payloads that could not be decoded or mapped, kept whole for replay; when each
-- device last reported; and the registry's device ids, which the device registry extends.

CREATE TABLE quarantine (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL,
    detail      text        NOT NULL DEFAULT '',
    mapping     text,
    resolved_at timestamptz
);
CREATE INDEX quarantine_unresolved_idx ON quarantine (reason, id) WHERE resolved_at IS NULL;
CREATE INDEX quarantine_received_idx ON quarantine (received_at);

CREATE TABLE device_last_seen (
    device_id        text        PRIMARY KEY,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    last_reading_at  timestamptz NOT NULL,
    last_received_at timestamptz NOT NULL
);

CREATE TABLE devices (
    device_id  text        PRIMARY KEY,
    status     text        NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'maintenance', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Devices that report but are not registered: for technicians to adopt.
CREATE VIEW pending_devices AS
    SELECT s.*
    FROM device_last_seen s
    WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.device_id = s.device_id);
