-- Remove the activity whose lock p_lock_token holds and, with p_work_item
-- set, enqueue its completion for p_instance_id; returns whether the token
-- was found and what to wake (procedures/ack_work_item.sql says why the
-- instance's claim row is share-locked first). Also the first step of
-- ack_work_item_and_claim.
-- params: p_lock_token text, p_instance_id text, p_item_kind text, p_work_item text
WITH shared AS MATERIALIZED (
    -- Only when a completion is queued (without one, there is no instance).
    -- A row deleted meanwhile (the instance purged) is not returned.
    SELECT 1 FROM {{schema}}.instance_claims k
     WHERE k.instance_id = p_instance_id AND p_work_item IS NOT NULL
       FOR SHARE),
claim AS (
    -- Only when no row was found to share-lock (the conditions are
    -- evaluated in order, the later ones only then): a row this
    -- statement's snapshot sees was purged by a delete the lock waited
    -- for, and with no row and no activity under the token, the instance
    -- was deleted before. Either way the ack fails and must write nothing.
    -- What is left is an activity whose instance never had a row (written
    -- by an older build, or behind the provider's back).
    INSERT INTO {{schema}}.instance_claims AS k (instance_id)
    SELECT p_instance_id
     WHERE p_work_item IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM shared)
       AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_claims v WHERE v.instance_id = p_instance_id)
       AND EXISTS (SELECT 1 FROM {{schema}}.worker_queue w
                    WHERE w.lock_token = p_lock_token AND w.locked_until_ms > {{now_ms}})
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
