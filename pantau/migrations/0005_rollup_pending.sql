-- Late readings reach the rollups. The regular refresh (plain: the last
-- storage.rollup_lookback_minutes; TimescaleDB: the continuous aggregate policies' windows) never
-- looks further back, so the ingestion writer notes the time range of every committed batch that
-- starts before `rollup_window.late_after`, in the batch's own transaction
-- (pantau_note_written), and the storage worker refreshes those ranges, coalesced, then deletes
-- them. Same SQL for both storage flavors.

CREATE TABLE rollup_pending (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    from_time timestamptz NOT NULL,  -- the batch's earliest reading
    to_time   timestamptz NOT NULL,  -- and its latest (inclusive)
    noted_at  timestamptz NOT NULL DEFAULT now()
);

-- How old a batch's earliest reading must be for the regular refresh to miss it; the storage
-- worker sets it from its settings at start.
CREATE TABLE rollup_window (
    only_row   boolean  PRIMARY KEY DEFAULT true CHECK (only_row),
    late_after interval NOT NULL CHECK (late_after >= interval '0')
);
INSERT INTO rollup_window (late_after) VALUES (interval '10 minutes');

CREATE FUNCTION pantau_note_written(p_from timestamptz, p_to timestamptz) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO rollup_pending (from_time, to_time)
    SELECT p_from, p_to FROM rollup_window WHERE p_from < now() - late_after
$$;
