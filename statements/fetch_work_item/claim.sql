-- Lock the item until v_start + p_lock_timeout_ms and count the attempt.
-- A locked item is visible again when its lock ends, so that is its
-- visibility time too: the fetches' next due time and scan floor need no
-- other look at locks (src/scan_floor.rs).
-- With p_history_bytes above zero, also returns the events of the item's
-- instance's latest execution, as read_history returns them, unless they
-- take more than p_history_bytes as stored (measured from the stored
-- lengths without reading a value; NULL then, as with p_history_bytes NULL
-- or zero): the runtime reads that history right after the claim, and the
-- provider answers that read from this (src/prefetch.rs).
-- params: v_id bigint, v_token text, v_start bigint, p_lock_timeout_ms bigint, p_history_bytes bigint
WITH claimed AS (
    UPDATE {{schema}}.worker_queue q
       SET lock_token = v_token,
           locked_until_ms = v_start + p_lock_timeout_ms,
           visible_at_ms = v_start + p_lock_timeout_ms,
           attempt_count = q.attempt_count + 1
     WHERE q.id = v_id
 RETURNING q.lock_token, q.work_item, q.attempt_count, q.instance_id)
SELECT c.lock_token, c.work_item, c.attempt_count,
       CASE WHEN b.bytes <= p_history_bytes THEN
            (SELECT coalesce(pg_catalog.array_agg(h.event_data ORDER BY h.event_id), '{}')
               FROM {{schema}}.history h
              WHERE h.instance_id = c.instance_id AND h.execution_id = b.execution_id) END AS prefetched_history
  FROM claimed c
  LEFT JOIN LATERAL (
       SELECT x.execution_id,
              (SELECT coalesce(pg_catalog.sum(pg_catalog.octet_length(h.event_data)), 0)
                 FROM {{schema}}.history h
                WHERE h.instance_id = c.instance_id AND h.execution_id = x.execution_id) AS bytes
         FROM (SELECT coalesce(pg_catalog.max(e.execution_id), 1) AS execution_id
                 FROM {{schema}}.executions e
                WHERE e.instance_id = c.instance_id) x
        WHERE p_history_bytes > 0) b ON true
