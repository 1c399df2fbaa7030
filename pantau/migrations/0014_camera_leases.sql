-- Camera leases (scale-out): several identical instances on one database split the cameras
-- between them. Each instance says it is alive in `camera_lease_holders`, claims free or expired
-- leases with FOR UPDATE SKIP LOCKED up to its fair share (ceil(cameras / live instances)),
-- renews what it holds every lease_seconds/3 and probes only those; a lease its holder stopped
-- renewing expires and another instance takes the camera (see streams/leases.py).

-- One row per instance that probes cameras; expires_at passed: the instance is gone.
CREATE TABLE camera_lease_holders (
    holder     text        PRIMARY KEY CHECK (length(holder) BETWEEN 1 AND 64),
    heartbeat  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);

-- One row per camera ever leased. holder NULL (released) or expires_at passed: free to claim.
CREATE TABLE camera_leases (
    device_id  text        PRIMARY KEY REFERENCES cameras ON DELETE CASCADE,
    holder     text        CHECK (length(holder) BETWEEN 1 AND 64),
    expires_at timestamptz NOT NULL DEFAULT '-infinity',
    heartbeat  timestamptz
);
CREATE INDEX camera_leases_holder ON camera_leases (holder);

-- The cameras some instance must probe: registered as type `camera`, active or in maintenance
-- (a camera being worked on is still watched; the detector pauses its alerts), enabled.
CREATE VIEW cameras_to_probe AS
SELECT c.device_id
FROM cameras c
JOIN devices d USING (device_id)
WHERE d.device_type = 'camera' AND d.status IN ('active', 'maintenance') AND c.enabled;
