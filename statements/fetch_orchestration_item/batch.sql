-- Every visible (at v_now) or parked message of the instance joins the
-- batch, in order, up to p_max_batch_bytes of them as stored (the first
-- always, and a start, StartOrchestration or ContinueAsNew, whatever
-- comes before it; the rest wait for the instance's next turns): stamped
-- with the token, locked until v_start + p_lock_timeout_ms, its attempt
-- counted. Only the claimer (holding the claim row) locks these rows, so
-- this can wait at most for a finishing ack or abandon of an expired
-- lease. messages NULL: consumed since the candidate was read.
-- The bound is the last id of the prefix that starts under the limit (one
-- look-up before the update, over the same index; octet_length of a stored
-- value reads its length, not the value).
-- params: v_instance text, v_token text, v_start bigint, p_lock_timeout_ms bigint, v_now bigint, p_max_batch_bytes bigint
WITH locked AS (
    UPDATE {{schema}}.orchestrator_queue q
       SET lock_token = v_token,
           locked_until_ms = v_start + p_lock_timeout_ms,
           attempt_count = q.attempt_count + 1
     WHERE q.instance_id = v_instance
       AND (q.visible_at_ms <= v_now OR q.orphan_since_ms IS NOT NULL)
       AND (q.id <= (SELECT pg_catalog.max(r.id)
                       FROM (SELECT b.id,
                                    pg_catalog.sum(pg_catalog.octet_length(b.work_item)) OVER (ORDER BY b.id)
                                      - pg_catalog.octet_length(b.work_item) AS before
                               FROM {{schema}}.orchestrator_queue b
                              WHERE b.instance_id = v_instance
                                AND (b.visible_at_ms <= v_now OR b.orphan_since_ms IS NOT NULL)) r
                      WHERE r.before < greatest(p_max_batch_bytes, 1))
            OR q.item_kind IN ('StartOrchestration', 'ContinueAsNew'))
 RETURNING q.id, q.work_item, q.attempt_count, q.item_kind, q.orphan_since_ms)
SELECT pg_catalog.array_agg(k.work_item ORDER BY k.id) AS messages,
       pg_catalog.max(k.attempt_count) AS attempts,
       pg_catalog.bool_and(k.item_kind = 'QueueMessage') AS all_queue,
       pg_catalog.bool_or(k.item_kind IN ('StartOrchestration', 'ContinueAsNew')) AS has_start,
       -- Any parked message of the instance, in the batch or left out of
       -- it: a claim makes them all ordinary messages again (unpark.sql).
       (pg_catalog.bool_or(k.orphan_since_ms IS NOT NULL)
        OR EXISTS (SELECT FROM {{schema}}.orchestrator_queue p
                    WHERE p.instance_id = v_instance AND p.orphan_since_ms IS NOT NULL)) AS has_parked
  FROM locked k;
