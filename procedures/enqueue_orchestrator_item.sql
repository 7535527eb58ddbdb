-- enqueue_orchestrator_item: add one message to an instance's orchestrator
-- queue, visible at now + p_delay_ms (TimerFired items enqueued here follow
-- the delay too; only an ack makes them visible at their fire_at_ms).
-- Never creates the instance: the first ack does. Wakes the schema's
-- orchestrator waiters at commit (NOTIFY channel = schema name). Holds the
-- instance's advisory key shared until commit, so an ack of the instance
-- committing meanwhile either sees this message or notifies for it (see
-- ack_orchestration_item.sql).
CREATE OR REPLACE FUNCTION {{schema}}.enqueue_orchestrator_item(
    p_instance_id   text,
    p_item_kind     text,
    p_work_item     text,
    p_delay_ms      bigint)
RETURNS SETOF boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    WITH queued AS (
        INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
        SELECT p_instance_id, p_item_kind, p_work_item, n.now_ms + p_delay_ms, n.now_ms
          FROM (SELECT {{now_ms}} AS now_ms
                  FROM (SELECT pg_advisory_xact_lock_shared(hashtext('{{schema}}'), hashtext(p_instance_id))) k) n
        RETURNING 1)
    SELECT true FROM (SELECT pg_notify('{{channel}}', 'orchestrator')) notified;
END
$$;
