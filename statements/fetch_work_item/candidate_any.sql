-- fetch_work_item's candidate statement (candidate.sql) for TagFilter::Any
-- ('any': every item, whatever its tag): the queue's head, read from
-- worker_queue_visible_idx, as no tag is passed over. The same parameters,
-- in the same order, and the same row.
-- params: p_tag_mode text, p_tags text[], p_owner_id text, v_skip text[], p_next_due boolean, v_start bigint, p_lock_timeout_ms bigint, v_floor bigint, p_next_floor_margin_ms bigint
{{> fetch_work_item/_outputs}}
  LEFT JOIN LATERAL (
       SELECT q.id, q.visible_at_ms, q.session_id
         FROM {{schema}}.worker_queue q
        WHERE q.visible_at_ms <= n.now_ms
          -- The floor as a row comparison (see candidate.sql).
          AND (q.visible_at_ms, q.id) >= (coalesce(v_floor, -9223372036854775807), -9223372036854775807)
          AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
          AND {{> fetch_work_item/_session_free}}
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
