-- fetch_work_item's candidate statement (candidate.sql) for the default tag
-- filter ('default': untagged items only), the filter of duroxide's workers
-- unless configured otherwise: the untagged head alone, read from
-- worker_queue_tag_idx, with none of the other filters' branches, whose
-- plan nodes every call would set up for nothing (40 to 60 us a fetch).
-- The same parameters, in the same order, and the same row.
-- params: p_tag_mode text, p_tags text[], p_owner_id text, v_skip text[], p_next_due boolean, v_start bigint, p_lock_timeout_ms bigint, v_floor bigint, p_next_floor_margin_ms bigint
{{> fetch_work_item/_outputs}}
  LEFT JOIN LATERAL (
       {{> fetch_work_item/_untagged_head}}
          FOR UPDATE OF q SKIP LOCKED) c ON true
  -- Whether another untagged item follows; a subquery of its own (OFFSET 0
  -- keeps it one) so the next due time's test does not evaluate it again.
  CROSS JOIN LATERAL (
       SELECT {{> fetch_work_item/_untagged_more}} AS more
       OFFSET 0) m;
