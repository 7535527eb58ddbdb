-- Lock the item until v_start + p_lock_timeout_ms and count the attempt.
-- A locked item is visible again when its lock ends, so that is its
-- visibility time too: the fetches' next due time and scan floor need no
-- other look at locks (src/scan_floor.rs).
-- params: v_id bigint, v_token text, v_start bigint, p_lock_timeout_ms bigint
UPDATE {{schema}}.worker_queue q
   SET lock_token = v_token,
       locked_until_ms = v_start + p_lock_timeout_ms,
       visible_at_ms = v_start + p_lock_timeout_ms,
       attempt_count = q.attempt_count + 1
 WHERE q.id = v_id
RETURNING q.lock_token, q.work_item, q.attempt_count;
