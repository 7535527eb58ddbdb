-- ack_work_item: remove a completed activity and, when given, enqueue its
-- completion for the orchestration, atomically. A token whose lock is gone
-- (cancelled, stolen, or expired) returns false and nothing changes (the
-- caller reports DX001). The item's
-- session, if any, records the activity. Returns whether the token was
-- found and what to wake: an enqueued completion wakes the schema's
-- orchestrator waiters (the caller does, after the commit); 'orchestrator
-- settle' says more completions of the instance are on their way.
-- The instance's claim row (instance_claims) is share-locked (created and
-- locked when missing) before any other row lock (`n` reads `claim`, which
-- reads `shared`, before the delete locks a row) and held until commit, so
-- an ack of the instance committing meanwhile sees the completion or wakes
-- for it (see ack_orchestration_item.sql). A share lock lets the
-- completions of sibling activities commit together instead of one after
-- the other.
CREATE OR REPLACE FUNCTION {{schema}}.ack_work_item{{suffix}}(
    p_lock_token    text,
    p_instance_id   text,
    p_item_kind     text,
    p_work_item     text)
RETURNS TABLE (acked boolean, wake text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SECURITY DEFINER
AS $$
BEGIN
    RETURN QUERY
    WITH shared AS MATERIALIZED (
        -- Only when a completion is queued (without one, there is no instance).
        -- A row deleted meanwhile (the instance purged) is not returned.
        SELECT 1 FROM {{schema}}.instance_claims k
         WHERE k.instance_id = p_instance_id AND p_work_item IS NOT NULL
           FOR SHARE),
    claim AS (
        INSERT INTO {{schema}}.instance_claims AS k (instance_id)
        SELECT p_instance_id WHERE p_work_item IS NOT NULL AND NOT EXISTS (SELECT 1 FROM shared)
        ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false
        RETURNING 1),
    n AS (SELECT {{now_ms}} AS now_ms FROM (SELECT pg_catalog.count(*) FROM claim) k),
    done AS (
        DELETE FROM {{schema}}.worker_queue q
         USING n
         WHERE q.lock_token = p_lock_token AND q.locked_until_ms > n.now_ms
        RETURNING q.session_id, n.now_ms),
    touched AS (
        -- Looked up by key (not joined): a join would be planned as a hash
        -- over every session when the token's row count is estimated.
        UPDATE {{schema}}.sessions s
           SET last_activity_at_ms = d.now_ms
          FROM done d
         WHERE s.session_id = ANY (ARRAY(SELECT x.session_id FROM done x))
           AND s.session_id = d.session_id AND s.locked_until_ms > d.now_ms
        RETURNING 1),
    completion AS (
        INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
        SELECT p_instance_id, p_item_kind, p_work_item, d.now_ms, d.now_ms
          FROM done d
         WHERE p_work_item IS NOT NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM done),
           ARRAY(SELECT
                     -- 'orchestrator settle': other activities of the
                     -- instance are still queued or running, so more
                     -- completions are on their way (see src/notify/mod.rs).
                     CASE WHEN EXISTS (SELECT 1 FROM {{schema}}.worker_queue w
                                        WHERE w.instance_id = p_instance_id
                                          AND w.lock_token IS DISTINCT FROM p_lock_token)
                          THEN 'orchestrator settle' ELSE 'orchestrator' END
                   FROM done WHERE p_work_item IS NOT NULL);
END
$$;
