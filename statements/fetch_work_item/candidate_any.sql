-- fetch_work_item's candidate statement (candidate.sql) for TagFilter::Any
-- ('any': every item, whatever its tag): the queue's head, read from
-- worker_queue_visible_idx, as no tag is passed over. The same parameters,
-- in the same order, and the same row.
-- params: p_tag_mode text, p_tags text[], p_owner_id text, v_skip text[], p_next_due boolean, v_start bigint, p_lock_timeout_ms bigint, v_floor bigint, p_next_floor_margin_ms bigint
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
  LEFT JOIN LATERAL (
       SELECT q.id, q.visible_at_ms, q.session_id
         FROM {{schema}}.worker_queue q
        WHERE q.visible_at_ms <= n.now_ms
          -- The floor as a row comparison (see candidate.sql).
          AND (q.visible_at_ms, q.id) >= (coalesce(v_floor, -9223372036854775807), -9223372036854775807)
          AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
          -- Session checks are scalar lookups per candidate row, not a
          -- hash of every session.
          AND (q.session_id IS NULL
               OR (p_owner_id IS NOT NULL
                   AND q.session_id <> ALL (v_skip)
                   AND coalesce((SELECT s.locked_until_ms <= n.now_ms OR s.owner_id = p_owner_id
                                   FROM {{schema}}.sessions s
                                  WHERE s.session_id = q.session_id), true)))
        ORDER BY q.visible_at_ms, q.id
        LIMIT 1
          FOR UPDATE OF q SKIP LOCKED) c ON true
  -- Whether another item follows; a subquery of its own (OFFSET 0 keeps
  -- it one) so the next due time's test does not evaluate it again.
  CROSS JOIN LATERAL (
       SELECT (SELECT o.id FROM {{schema}}.worker_queue o
                WHERE (o.visible_at_ms, o.id) > (c.visible_at_ms, c.id)
                  AND o.visible_at_ms <= n.now_ms
                  AND (o.lock_token IS NULL OR o.locked_until_ms <= n.now_ms)
                ORDER BY o.visible_at_ms, o.id
                LIMIT 1) IS NOT NULL AS more
       OFFSET 0) m;
