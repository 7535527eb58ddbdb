-- enqueue_orchestrator_item: add one message to an instance's orchestrator
-- queue, visible at now + p_delay_ms (TimerFired items enqueued here follow
-- the delay too; only an ack makes them visible at their fire_at_ms).
-- Never creates the instance: the first ack does. Returns what to wake
-- ('orchestrator'): the caller wakes the schema's orchestrator waiters after
-- the commit (NOTIFY channel = schema name). Share-locks the instance's
-- claim row (instance_claims) before the insert, creating and locking it
-- when missing, and holds it until commit, so an ack of the instance
-- committing meanwhile either sees this message or notifies for it, and a
-- fetch in flight claims the instance before or after, never while (see
-- ack_orchestration_item.sql). ON CONFLICT DO UPDATE ... WHERE false locks
-- a row another writer created meanwhile without writing a new version of
-- it.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.enqueue_orchestrator_item{{suffix}}(
    p_instance_id   text,
    p_item_kind     text,
    p_work_item     text,
    p_delay_ms      bigint)
RETURNS SETOF text[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    WITH shared AS MATERIALIZED (
        -- A started instance's claim row exists: share-locked, so writers of
        -- one instance do not wait for each other's commit. A row deleted
        -- meanwhile (the instance purged) is not returned.
        SELECT 1 FROM {{schema}}.instance_claims k WHERE k.instance_id = p_instance_id FOR SHARE),
    claim AS (
        INSERT INTO {{schema}}.instance_claims AS k (instance_id)
        SELECT p_instance_id WHERE NOT EXISTS (SELECT 1 FROM shared)
        ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false
        RETURNING 1),
    queued AS (
        INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
        SELECT p_instance_id, p_item_kind, p_work_item, n.now_ms OPERATOR(pg_catalog.+) p_delay_ms, n.now_ms
          FROM (SELECT {{now_ms}} AS now_ms FROM (SELECT pg_catalog.count(*) FROM claim) k) n
        RETURNING 1)
    SELECT ARRAY['orchestrator']::text[];
END
$$;
