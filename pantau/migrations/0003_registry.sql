-- The device registry: the six smart-city pillars, the 23 kecamatan, device types with their
-- metrics (units, valid ranges, alarm thresholds), the devices themselves, API tokens and the
-- audit log. The devices table of 0002 gains its registry columns.

CREATE TABLE pillars (
    id      text PRIMARY KEY,
    name    text NOT NULL,
    name_id text NOT NULL
);

CREATE TABLE kecamatan (
    id        text             PRIMARY KEY,
    name      text             NOT NULL UNIQUE,
    latitude  double precision NOT NULL,
    longitude double precision NOT NULL
);

CREATE TABLE device_types (
    id                        text    PRIMARY KEY,
    name                      text    NOT NULL,
    name_id                   text    NOT NULL,
    pillar                    text    NOT NULL REFERENCES pillars,
    expected_interval_seconds integer NOT NULL CHECK (expected_interval_seconds > 0)
);

CREATE TABLE device_type_metrics (
    device_type text NOT NULL REFERENCES device_types ON DELETE CASCADE,
    metric      text NOT NULL,
    unit        text NOT NULL,
    valid_min   double precision,
    valid_max   double precision,
    warn_low    double precision,
    warn_high   double precision,
    alarm_low   double precision,
    alarm_high  double precision,
    PRIMARY KEY (device_type, metric)
);

ALTER TABLE devices
    ADD COLUMN name                      text,
    ADD COLUMN device_type               text REFERENCES device_types,
    ADD COLUMN kecamatan                 text REFERENCES kecamatan,
    ADD COLUMN pillar                    text REFERENCES pillars,
    ADD COLUMN latitude                  double precision,
    ADD COLUMN longitude                 double precision,
    ADD COLUMN address_note              text NOT NULL DEFAULT '',
    ADD COLUMN install_date              date,
    ADD COLUMN installed_by              text NOT NULL DEFAULT '',
    ADD COLUMN expected_interval_seconds integer CHECK (expected_interval_seconds > 0),
    ADD COLUMN payload_format            text NOT NULL DEFAULT 'json'
                                         CHECK (payload_format IN ('number', 'json', 'senml')),
    ADD COLUMN topic                     text NOT NULL DEFAULT '',
    ADD COLUMN metadata                  jsonb NOT NULL DEFAULT '{}',
    ADD COLUMN version                   integer NOT NULL DEFAULT 1,
    ADD COLUMN updated_at                timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN mqtt_username             text;
CREATE INDEX devices_kecamatan_idx ON devices (kecamatan);
CREATE INDEX devices_type_idx ON devices (device_type);

CREATE TABLE api_tokens (
    id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('operator', 'technician', 'admin')),
    token_hash   text        NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text        NOT NULL DEFAULT '',
    revoked_at   timestamptz,
    last_used_at timestamptz
);

CREATE TABLE audit_log (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        timestamptz NOT NULL DEFAULT now(),
    actor     text        NOT NULL,
    action    text        NOT NULL,
    entity    text        NOT NULL,
    entity_id text        NOT NULL,
    before    jsonb,
    after     jsonb
);
CREATE INDEX audit_log_entity_idx ON audit_log (entity, entity_id, id);

INSERT INTO pillars (id, name, name_id) VALUES
    ('governance', 'Smart governance', 'Tata kelola cerdas'),
    ('branding', 'Smart branding', 'Branding cerdas'),
    ('economy', 'Smart economy', 'Ekonomi cerdas'),
    ('society', 'Smart society', 'Masyarakat cerdas'),
    ('environment', 'Smart environment', 'Lingkungan cerdas'),
    ('living', 'Smart living', 'Kehidupan cerdas');

INSERT INTO kecamatan (id, name, latitude, longitude) VALUES
    ('babelan', 'Babelan', -6.1333, 107.0333),
    ('bojongmangu', 'Bojongmangu', -6.4333, 107.1667),
    ('cabangbungin', 'Cabangbungin', -6.0667, 107.1333),
    ('cibarusah', 'Cibarusah', -6.4333, 107.0833),
    ('cibitung', 'Cibitung', -6.2667, 107.0833),
    ('cikarang-barat', 'Cikarang Barat', -6.2667, 107.1),
    ('cikarang-pusat', 'Cikarang Pusat', -6.35, 107.15),
    ('cikarang-selatan', 'Cikarang Selatan', -6.35, 107.1),
    ('cikarang-timur', 'Cikarang Timur', -6.2833, 107.1833),
    ('cikarang-utara', 'Cikarang Utara', -6.2833, 107.1333),
    ('karangbahagia', 'Karangbahagia', -6.1833, 107.1167),
    ('kedungwaringin', 'Kedungwaringin', -6.2333, 107.2333),
    ('muaragembong', 'Muaragembong', -5.9833, 107.0333),
    ('pebayuran', 'Pebayuran', -6.15, 107.2833),
    ('serang-baru', 'Serang Baru', -6.3833, 107.1),
    ('setu', 'Setu', -6.35, 107.0333),
    ('sukakarya', 'Sukakarya', -6.1, 107.1833),
    ('sukatani', 'Sukatani', -6.1667, 107.15),
    ('sukawangi', 'Sukawangi', -6.0333, 107.1),
    ('tambelang', 'Tambelang', -6.1667, 107.0833),
    ('tambun-selatan', 'Tambun Selatan', -6.2667, 107.05),
    ('tambun-utara', 'Tambun Utara', -6.2, 107.0667),
    ('tarumajaya', 'Tarumajaya', -6.1, 106.9833);

INSERT INTO device_types (id, name, name_id, pillar, expected_interval_seconds) VALUES
    ('water_level', 'River / drainage water level', 'Tinggi muka air', 'environment', 60),
    ('rain_gauge', 'Rain gauge', 'Penakar hujan', 'environment', 60),
    ('air_quality', 'Air quality (PM2.5, PM10)', 'Kualitas udara', 'environment', 300),
    ('weather', 'Weather station', 'Stasiun cuaca', 'environment', 300),
    ('traffic_counter', 'Traffic counter', 'Penghitung lalu lintas', 'living', 60),
    ('street_light', 'Smart street light', 'Lampu jalan pintar', 'living', 600),
    ('waste_bin', 'Waste bin fill sensor', 'Sensor tempat sampah', 'environment', 900),
    ('cctv_camera', 'CCTV camera', 'Kamera CCTV', 'society', 60);

-- Thresholds: water levels in cm above the gauge zero; PM breakpoints of Indonesia's ISPU
-- (unhealthy from 55.5 / 150 ug/m3 for PM2.5 / PM10).
INSERT INTO device_type_metrics
    (device_type, metric, unit, valid_min, valid_max, warn_low, warn_high, alarm_low, alarm_high)
VALUES
    ('water_level', 'water_level_cm', 'cm', 0, 1500, NULL, 250, NULL, 350),
    ('rain_gauge', 'rain_mm', 'mm', 0, 200, NULL, 10, NULL, 25),
    ('air_quality', 'pm25_ugm3', 'ug/m3', 0, 1000, NULL, 55.5, NULL, 150.5),
    ('air_quality', 'pm10_ugm3', 'ug/m3', 0, 2000, NULL, 150, NULL, 350),
    ('weather', 'air_temperature_c', 'C', -10, 60, NULL, 36, NULL, 40),
    ('weather', 'humidity_pct', '%', 0, 100, NULL, NULL, NULL, NULL),
    ('weather', 'wind_speed_ms', 'm/s', 0, 75, NULL, 10.8, NULL, 17.2),
    ('weather', 'pressure_hpa', 'hPa', 850, 1100, NULL, NULL, NULL, NULL),
    ('traffic_counter', 'vehicles', 'vehicles', 0, 20000, NULL, NULL, NULL, NULL),
    ('street_light', 'power_w', 'W', 0, 1000, NULL, NULL, NULL, NULL),
    ('street_light', 'lamp_on', '1', 0, 1, NULL, NULL, NULL, NULL),
    ('waste_bin', 'fill_pct', '%', 0, 100, NULL, 80, NULL, 95),
    ('cctv_camera', 'online', '1', 0, 1, NULL, NULL, 0.5, NULL),
    ('cctv_camera', 'fps', 'fps', 0, 120, 5, NULL, 1, NULL),
    ('cctv_camera', 'bitrate_kbps', 'kbit/s', 0, 100000, NULL, NULL, NULL, NULL);
