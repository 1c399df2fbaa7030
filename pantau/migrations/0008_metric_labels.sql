-- What a person reads beside a metric: its Indonesian label (the phone page's live check, the
-- wall) and a realistic example value (the setup snippet a technician copies onto a device).

ALTER TABLE device_type_metrics
    ADD COLUMN label_id text,
    ADD COLUMN example  double precision;

UPDATE device_type_metrics AS m
SET label_id = v.label_id, example = v.example
FROM (VALUES
    ('water_level', 'water_level_cm', 'Tinggi muka air', 132.5),
    ('rain_gauge', 'rain_mm', 'Curah hujan', 0.4),
    ('air_quality', 'pm25_ugm3', 'PM2.5', 38.2),
    ('air_quality', 'pm10_ugm3', 'PM10', 61.7),
    ('weather', 'air_temperature_c', 'Suhu udara', 31.4),
    ('weather', 'humidity_pct', 'Kelembapan', 74),
    ('weather', 'wind_speed_ms', 'Kecepatan angin', 2.8),
    ('weather', 'pressure_hpa', 'Tekanan udara', 1009.6),
    ('traffic_counter', 'vehicles', 'Jumlah kendaraan', 142),
    ('street_light', 'power_w', 'Daya lampu', 112.4),
    ('street_light', 'lamp_on', 'Lampu menyala', 1),
    ('waste_bin', 'fill_pct', 'Tingkat isi', 63),
    ('cctv_camera', 'online', 'Kamera daring', 1),
    ('cctv_camera', 'fps', 'Laju gambar', 25),
    ('cctv_camera', 'bitrate_kbps', 'Laju data', 2048)
) AS v (device_type, metric, label_id, example)
WHERE m.device_type = v.device_type AND m.metric = v.metric;
