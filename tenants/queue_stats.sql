-- queue_stats: one tenant's queue depths and leases at one moment of the
-- database clock.
--
-- A message is visible when it is due (visible_at_ms has passed) and not
-- leased (never locked, or its lease ran out). Its age is how long it has
-- been visible. A lease is live while locked_until_ms is in the future:
-- an instance's turn (instance_locks) or an activity (worker_queue);
-- expired leases are those not yet taken over or cleaned up.
WITH n AS (SELECT {{now_ms}} AS now_ms)
SELECT n.now_ms,
       (SELECT pg_catalog.count(*) FROM {{schema}}.instances) AS instances,
       (SELECT pg_catalog.count(*) FROM {{schema}}.orchestrator_queue) AS orchestrator_messages,
       (SELECT pg_catalog.count(*) FROM {{schema}}.orchestrator_queue q
         WHERE q.visible_at_ms <= n.now_ms
           AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)) AS orchestrator_visible,
       (SELECT n.now_ms - pg_catalog.min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
         WHERE q.visible_at_ms <= n.now_ms
           AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)) AS orchestrator_oldest_ms,
       (SELECT pg_catalog.count(*) FROM {{schema}}.orchestrator_queue q
         WHERE q.orphan_since_ms IS NOT NULL) AS parked_orphans,
       (SELECT pg_catalog.count(*) FROM {{schema}}.worker_queue) AS worker_items,
       (SELECT pg_catalog.count(*) FROM {{schema}}.worker_queue w
         WHERE w.visible_at_ms <= n.now_ms
           AND (w.lock_token IS NULL OR w.locked_until_ms <= n.now_ms)) AS worker_visible,
       (SELECT n.now_ms - pg_catalog.min(w.visible_at_ms) FROM {{schema}}.worker_queue w
         WHERE w.visible_at_ms <= n.now_ms
           AND (w.lock_token IS NULL OR w.locked_until_ms <= n.now_ms)) AS worker_oldest_ms,
       (SELECT pg_catalog.count(*) FROM {{schema}}.instance_locks l
         WHERE l.locked_until_ms > n.now_ms) AS live_instance_leases,
       (SELECT pg_catalog.count(*) FROM {{schema}}.worker_queue w
         WHERE w.lock_token IS NOT NULL AND w.locked_until_ms > n.now_ms) AS live_activity_leases,
       (SELECT pg_catalog.count(*) FROM {{schema}}.instance_locks l
         WHERE l.locked_until_ms <= n.now_ms) AS expired_instance_leases,
       (SELECT pg_catalog.count(*) FROM {{schema}}.worker_queue w
         WHERE w.lock_token IS NOT NULL AND w.locked_until_ms <= n.now_ms) AS expired_activity_leases
  FROM n
