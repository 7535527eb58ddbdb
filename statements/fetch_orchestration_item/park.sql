-- Nothing to run yet: park the batch until its retention ends (counted from
-- when it was first parked), dropping what outlived it, and give the lease
-- back. The instance's visible messages the batch left out (over
-- p_max_batch_bytes) are parked with it, from now: none may stay visible,
-- or the next fetch would meet the instance again at once and park the
-- same batch again.
-- params: v_token text, v_now bigint, p_orphan_retention_ms bigint, v_instance text
WITH dropped AS (
    DELETE FROM {{schema}}.orchestrator_queue q
     WHERE q.instance_id = v_instance AND q.lock_token = v_token
       AND coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms <= v_now),
parked AS (
    UPDATE {{schema}}.orchestrator_queue q
       SET lock_token = NULL, locked_until_ms = NULL, attempt_count = q.attempt_count - 1,
           orphan_since_ms = coalesce(q.orphan_since_ms, v_now),
           visible_at_ms = coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms
     WHERE q.instance_id = v_instance AND q.lock_token = v_token
       AND coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms > v_now),
left_out AS (
    UPDATE {{schema}}.orchestrator_queue q
       SET lock_token = NULL, locked_until_ms = NULL,
           orphan_since_ms = v_now,
           visible_at_ms = v_now + p_orphan_retention_ms
     WHERE q.instance_id = v_instance AND q.lock_token IS DISTINCT FROM v_token
       AND q.orphan_since_ms IS NULL AND q.visible_at_ms <= v_now)
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
