-- Part of the candidate statements (candidate*.sql), which differ only by
-- how they find the candidate c and whether more follows (m): the row they
-- return, from the clock n. See candidate.sql for what each column means.
SELECT pg_catalog.set_config('synchronous_commit', 'off', true) AS lazy_commit,
       c.id, c.session_id, n.now_ms,
       m.more,
       CASE WHEN p_next_due AND NOT m.more AND (c.id IS NULL OR pg_catalog.cardinality(v_skip) = 0) THEN
            -- A locked item's visibility time is when its lock ends
            -- (claim.sql), so the first covers lock expiries.
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.worker_queue q
                    WHERE q.visible_at_ms > n.now_ms),
                  (SELECT pg_catalog.min(s.locked_until_ms) FROM {{schema}}.sessions s
                    WHERE s.locked_until_ms > n.now_ms),
                  -- The claimed item's own lock.
                  CASE WHEN c.id IS NOT NULL THEN coalesce(v_start, n.now_ms) + p_lock_timeout_ms END) - n.now_ms
       END AS next_due_ms,
       CASE WHEN p_next_floor_margin_ms IS NOT NULL THEN
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.worker_queue q
                    WHERE q.visible_at_ms >= coalesce(v_floor, -9223372036854775807)),
                  n.now_ms) - p_next_floor_margin_ms
       END AS scan_floor_ms
  FROM (SELECT {{now_ms}} AS now_ms) n
