-- Cameras (the streams domain): the CCTV type is renamed `camera`; each camera's stream and its
-- thresholds; the probe's results as a time series (`camera_health`); snapshot files on disk are
-- indexed in `camera_snapshots` so their history stays bounded and survives restarts.

-- The type `cctv_camera` becomes `camera`, probed every 10 s. Its devices, metrics and outage
-- history follow (no FK cascades on update, so: copy, repoint, delete).
INSERT INTO device_types (id, name, name_id, pillar, expected_interval_seconds)
SELECT 'camera', 'CCTV camera (RTSP)', 'Kamera CCTV', pillar, 10
FROM device_types WHERE id = 'cctv_camera'
ON CONFLICT (id) DO NOTHING;
INSERT INTO device_type_metrics
    (device_type, metric, unit, valid_min, valid_max, warn_low, warn_high, alarm_low, alarm_high,
     label_id, example)
SELECT 'camera', metric, unit, valid_min, valid_max, warn_low, warn_high, alarm_low, alarm_high,
       label_id, example
FROM device_type_metrics WHERE device_type = 'cctv_camera'
ON CONFLICT (device_type, metric) DO NOTHING;
UPDATE devices SET device_type = 'camera' WHERE device_type = 'cctv_camera';
UPDATE outages SET device_type = 'camera' WHERE device_type = 'cctv_camera';
DELETE FROM device_types WHERE id = 'cctv_camera';

-- One row per camera device: where its stream is and how it is judged. NULL thresholds take the
-- `[streams]` settings' defaults. rtsp_url may hold credentials: never shown unredacted.
CREATE TABLE cameras (
    device_id              text        PRIMARY KEY REFERENCES devices ON DELETE CASCADE,
    rtsp_url               text        NOT NULL CHECK (rtsp_url ~ '^rtsps?://'),
    probe_interval_seconds double precision NOT NULL DEFAULT 10
                                       CHECK (probe_interval_seconds BETWEEN 1 AND 3600),
    enabled                boolean     NOT NULL DEFAULT true,
    -- classification thresholds (see streams/health.py); NULL = the settings' default
    black_luma             double precision CHECK (black_luma BETWEEN 0 AND 255),
    covered_ratio          double precision CHECK (covered_ratio > 0 AND covered_ratio < 1),
    frozen_samples         integer     CHECK (frozen_samples BETWEEN 2 AND 100),
    bad_samples            integer     CHECK (bad_samples BETWEEN 1 AND 100),
    version                integer     NOT NULL DEFAULT 1,
    updated_at             timestamptz NOT NULL DEFAULT now()
);

-- The probe's verdict per check interval. state: ok | frozen | black | covered | blurred |
-- offline (reason: refused, auth, not_found, timeout, no_video, stalled, ended, error).
CREATE TABLE camera_health (
    time            timestamptz      NOT NULL,
    device_id       text             NOT NULL,
    state           text             NOT NULL
                    CHECK (state IN ('ok', 'frozen', 'black', 'covered', 'blurred', 'offline')),
    reason          text,
    connect_seconds double precision,
    codec           text,
    width           integer,
    height          integer,
    fps             double precision,
    bitrate_kbps    double precision,
    packets         integer,
    keyframes       integer,
    decode_errors   integer,
    luma            double precision,
    contrast        double precision,
    edge_density    double precision,
    sharpness       double precision,
    change          double precision,
    PRIMARY KEY (device_id, time)
);
CREATE INDEX camera_health_time_idx ON camera_health (time);

-- Snapshot files kept per camera (newest first by taken_at); the file is
-- <streams.snapshot_dir>/<device_id>/<file_name>.
CREATE TABLE camera_snapshots (
    device_id text        NOT NULL REFERENCES devices ON DELETE CASCADE,
    taken_at  timestamptz NOT NULL,
    file_name text        NOT NULL,
    bytes     integer     NOT NULL,
    PRIMARY KEY (device_id, taken_at)
);

-- A change to a camera's row wakes the probes' supervisor at once (it also re-reads every 30 s).
CREATE FUNCTION pantau_cameras_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pantau_cameras', COALESCE(NEW.device_id, OLD.device_id));
    RETURN NULL;
END
$$;
CREATE TRIGGER cameras_changed AFTER INSERT OR UPDATE OR DELETE ON cameras
    FOR EACH ROW EXECUTE FUNCTION pantau_cameras_changed();
