-- The delivery worker is woken at once when an alert event becomes due (issue 9): a new
-- pending row of alert_outbox, or a grouped one set back to pending when its area outage ends.
-- pg_notify sends one notification per transaction for identical payloads, so a detector pass
-- that writes 1,000 rows wakes the worker once, when it commits.
CREATE FUNCTION pantau_outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('pantau_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER alert_outbox_inserted AFTER INSERT ON alert_outbox
    FOR EACH ROW WHEN (NEW.status = 'pending') EXECUTE FUNCTION pantau_outbox_notify();
CREATE TRIGGER alert_outbox_pending_again AFTER UPDATE OF status ON alert_outbox
    FOR EACH ROW WHEN (OLD.status <> 'pending' AND NEW.status = 'pending')
    EXECUTE FUNCTION pantau_outbox_notify();
