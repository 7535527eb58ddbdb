-- queued_items: every message of the orchestrator queue and every item of
-- the worker queue, for tenants::unreadable, which decodes each in the
-- client and keeps those this build cannot read (in queue and id order).
-- An operator's read of both queues whole, streamed a row at a time.
SELECT 'orchestrator' AS queue, q.id, q.instance_id, q.attempt_count, q.visible_at_ms,
       (q.lock_token IS NOT NULL AND q.locked_until_ms > n.now_ms) AS leased,
       q.work_item
  FROM (SELECT {{now_ms}} AS now_ms) n, {{schema}}.orchestrator_queue q
UNION ALL
SELECT 'worker', w.id, w.instance_id, w.attempt_count, w.visible_at_ms,
       (w.lock_token IS NOT NULL AND w.locked_until_ms > n.now_ms),
       w.work_item
  FROM (SELECT {{now_ms}} AS now_ms) n, {{schema}}.worker_queue w
