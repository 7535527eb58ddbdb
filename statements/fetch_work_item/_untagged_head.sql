-- Part of the candidate statements (candidate.sql, candidate_untagged.sql):
-- the head of the untagged items this worker may take (row-locked by
-- candidate_untagged.sql, which follows it with FOR UPDATE SKIP LOCKED).
-- ORDER BY names the tag first, which only worker_queue_tag_idx gives
-- without a sort, so a backlog of tagged items ahead is never walked over.
SELECT q.id, q.visible_at_ms, q.session_id
  FROM {{schema}}.worker_queue q
 WHERE q.tag IS NULL
   AND q.visible_at_ms <= n.now_ms
   -- The floor as a row comparison: two plain bounds on visible_at_ms,
   -- neither known to a generic plan, look a few rows wide to the planner,
   -- which then sorts every visible row instead of reading the index from
   -- the floor.
   AND (q.visible_at_ms, q.id) >= (coalesce(v_floor, -9223372036854775807), -9223372036854775807)
   AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
   AND {{> fetch_work_item/_session_free}}
 ORDER BY q.tag, q.visible_at_ms, q.id
 LIMIT 1
