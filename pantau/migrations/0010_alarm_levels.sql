-- Value alarms (issue 9, point 3): named, ordered alert levels per device type and metric,
-- overridable per device, each with hysteresis (clear_at below raise_at) and a minimum
-- duration. A level holds when its measure reaches raise_at: the metric's latest value, or the
-- SUM of the metric over window_seconds (rainfall intensity). The detector's pass evaluates
-- them (devices/outages/alarms.py) and writes alarms as outages of kind 'alarm'.

CREATE TABLE alarm_levels (
    device_type          text             NOT NULL,
    metric               text             NOT NULL,
    rank                 integer          NOT NULL CHECK (rank >= 1),  -- 1 = the mildest
    name                 text             NOT NULL,                    -- e.g. 'Siaga 3'
    severity             text             NOT NULL
                                          CHECK (severity IN ('info', 'warning', 'critical')),
    raise_at             double precision NOT NULL,
    clear_at             double precision NOT NULL,
    direction            text             NOT NULL DEFAULT 'above' CHECK (direction = 'above'),
    window_seconds       integer          CHECK (window_seconds > 0),  -- NULL: the latest value
    min_duration_seconds integer          NOT NULL DEFAULT 0 CHECK (min_duration_seconds >= 0),
    source               text             NOT NULL,
    PRIMARY KEY (device_type, metric, rank),
    UNIQUE (device_type, metric, name),
    FOREIGN KEY (device_type, metric) REFERENCES device_type_metrics ON DELETE CASCADE,
    CHECK (clear_at <= raise_at)
);

-- A device's own levels: when a device has any for a metric, they replace its type's levels
-- for that metric (one river gauge's own Siaga levels).
CREATE TABLE device_alarm_levels (
    device_id            text             NOT NULL REFERENCES devices ON DELETE CASCADE,
    metric               text             NOT NULL,
    rank                 integer          NOT NULL CHECK (rank >= 1),
    name                 text             NOT NULL,
    severity             text             NOT NULL
                                          CHECK (severity IN ('info', 'warning', 'critical')),
    raise_at             double precision NOT NULL,
    clear_at             double precision NOT NULL,
    direction            text             NOT NULL DEFAULT 'above' CHECK (direction = 'above'),
    window_seconds       integer          CHECK (window_seconds > 0),
    min_duration_seconds integer          NOT NULL DEFAULT 0 CHECK (min_duration_seconds >= 0),
    source               text             NOT NULL,
    PRIMARY KEY (device_id, metric, rank),
    UNIQUE (device_id, metric, name),
    CHECK (clear_at <= raise_at)
);

-- Evaluation is incremental: a pass looks at the devices whose last_received_at moved past
-- the watermark (less a small margin for writers committing late), the devices with an open
-- alarm and those with a pending level.
CREATE TABLE alarm_watermark (
    only_row     boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    evaluated_to timestamptz NOT NULL DEFAULT '1970-01-01 00:00:00+00'  -- arrivals: server time
);
INSERT INTO alarm_watermark DEFAULT VALUES;

-- A level whose raise condition holds but not yet for its min_duration_seconds: since when.
CREATE TABLE alarm_pending (
    device_id text        NOT NULL REFERENCES devices ON DELETE CASCADE,
    metric    text        NOT NULL,
    rank      integer     NOT NULL,
    since     timestamptz NOT NULL,
    PRIMARY KEY (device_id, metric, rank)
);

-- Water level, cm above the gauge zero: KP2C's levels for Kali Bekasi at the P2C weir (a
-- device override sets a gauge's own). Clear 20 cm below.
-- PM2.5 and PM10, ug/m3: ISPU categories of P.14/MENLHK/SETJEN/KUM.1/7/2020, their lower bounds
-- at the rounding the regulation uses (PM2.5 to 0.1, PM10 to 1); clear a little below. The
-- regulation's categories are for a 24 h average: Pantau judges the latest value held for
-- 10 minutes, an early warning, not the official ISPU.
-- Rain, mm summed over the last hour or day: BMKG's intensity classes (lebat 10-20 mm/h, sangat
-- lebat > 20 mm/h; lebat 50-100, sangat lebat 100-150, ekstrem > 150 mm/day). One alarm per
-- metric, so the hourly and daily classes share one order.
INSERT INTO alarm_levels
    (device_type, metric, rank, name, severity, raise_at, clear_at, window_seconds,
     min_duration_seconds, source)
VALUES
    ('water_level', 'water_level_cm', 1, 'Siaga 3', 'info', 350, 330, NULL, 0,
     'KP2C, Kali Bekasi di P2C (2026)'),
    ('water_level', 'water_level_cm', 2, 'Siaga 2', 'warning', 450, 430, NULL, 0,
     'KP2C, Kali Bekasi di P2C (2026)'),
    ('water_level', 'water_level_cm', 3, 'Siaga 1', 'critical', 550, 530, NULL, 0,
     'KP2C, Kali Bekasi di P2C (2026)'),
    ('air_quality', 'pm25_ugm3', 1, 'Sedang', 'info', 15.6, 14.5, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm25_ugm3', 2, 'Tidak Sehat', 'warning', 55.5, 50, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm25_ugm3', 3, 'Sangat Tidak Sehat', 'critical', 150.5, 140, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm25_ugm3', 4, 'Berbahaya', 'critical', 250.5, 240, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm10_ugm3', 1, 'Tidak Sehat', 'warning', 150.5, 140, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm10_ugm3', 2, 'Sangat Tidak Sehat', 'critical', 350.5, 330, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('air_quality', 'pm10_ugm3', 3, 'Berbahaya', 'critical', 420.5, 400, NULL, 600,
     'ISPU, P.14/MENLHK/SETJEN/KUM.1/7/2020'),
    ('rain_gauge', 'rain_mm', 1, 'Hujan lebat (1 jam)', 'warning', 10, 8, 3600, 0,
     'BMKG, intensitas hujan per jam'),
    ('rain_gauge', 'rain_mm', 2, 'Hujan lebat (24 jam)', 'warning', 50, 45, 86400, 0,
     'BMKG, intensitas hujan per hari'),
    ('rain_gauge', 'rain_mm', 3, 'Hujan sangat lebat (1 jam)', 'critical', 20, 16, 3600, 0,
     'BMKG, intensitas hujan per jam'),
    ('rain_gauge', 'rain_mm', 4, 'Hujan sangat lebat (24 jam)', 'critical', 100, 90, 86400, 0,
     'BMKG, intensitas hujan per hari'),
    ('rain_gauge', 'rain_mm', 5, 'Hujan ekstrem (24 jam)', 'critical', 150, 135, 86400, 0,
     'BMKG, intensitas hujan per hari');
