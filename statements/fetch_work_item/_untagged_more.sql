-- Part of the candidate statements (candidate.sql, candidate_untagged.sql):
-- whether an untagged item another fetch may take follows candidate c, in
-- worker_queue_tag_idx's order (no row locked, sessions not looked at).
(SELECT o.id FROM {{schema}}.worker_queue o
  WHERE o.tag IS NULL
    AND (o.visible_at_ms, o.id) > (c.visible_at_ms, c.id)
    AND o.visible_at_ms <= n.now_ms
    AND (o.lock_token IS NULL OR o.locked_until_ms <= n.now_ms)
  ORDER BY o.tag, o.visible_at_ms, o.id
  LIMIT 1) IS NOT NULL
