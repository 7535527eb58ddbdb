-- The oldest visible, unlocked (or lock-expired) item this worker may run
-- (with several kinds, nearly: see below), row-locked with SKIP LOCKED;
-- the clock; whether another such item may be taken (`more`); and, when
-- p_next_due is set and nothing was found or the first candidate (no
-- session skipped) is all there is, the time until the next delayed item,
-- item lock expiry or session lock expiry, the candidate's own lock counted
-- (from v_start; inline mode passes NULL: from the clock read here).
-- Always one row (id NULL: nothing found).
-- Items are taken in the order they became visible, then of arrival, among
-- those the tag filter lets the worker take: p_tag_mode 'tags' (items
-- tagged one of p_tags) or 'default_and' (those and the untagged).
-- 'default' (untagged only) and 'any' run statements of their own without
-- the branches they do not need (candidate_untagged.sql, candidate_any.sql),
-- which set up plan nodes on every call. The scan starts at v_floor, a
-- lower bound on every item's visibility (src/scan_floor.rs; NULL: the
-- whole index). With p_next_floor_margin_ms set, also returns the next
-- floor (scan_floor_ms): the least of the oldest item's visibility at or
-- above v_floor and the clock, minus that margin.
-- lazy_commit: the transaction commits with synchronous_commit off (a lease
-- lost to a crash is harmless; docs/architecture.md, "Durability").
-- params: p_tag_mode text, p_tags text[], p_owner_id text, v_skip text[], p_next_due boolean, v_start bigint, p_lock_timeout_ms bigint, v_floor bigint, p_next_floor_margin_ms bigint
{{> fetch_work_item/_outputs}}
  -- The candidate is the first in queue order of the items the filter may
  -- take, read from worker_queue_tag_idx so that a fetch reads only what it
  -- may take, whatever other tags queue ahead (a pool nobody runs). First
  -- the head of each kind, not locked: the untagged items' ('default_and'
  -- only; the mode test is a one-time filter of the cached plan, which then
  -- never runs the head's scan) and each tag's. Then, in the heads' order,
  -- each head's kind from that head on, row-locked with SKIP LOCKED, until
  -- one row is locked: the next kind is read only when another fetch holds
  -- every item of this one it may take. Locking each head as it was found
  -- held the heads not taken until the claim committed, and a concurrent
  -- fetch came back empty (tags::a_fetch_taking_several_kinds_holds_only_
  -- what_it_claims). Each ORDER BY names the tag first, which only
  -- worker_queue_tag_idx gives without a sort; a tag's bounds are a row
  -- comparison and a plain upper bound, not an equality, which would let
  -- the planner drop the tag from the order and walk worker_queue_visible_idx.
  LEFT JOIN LATERAL (
       SELECT w.id, w.visible_at_ms, w.session_id, h.heads
         FROM (SELECT h.tag, h.visible_at_ms, h.id, pg_catalog.count(*) OVER () AS heads
                 FROM (SELECT NULL::text AS tag, d.visible_at_ms, d.id
                         FROM ({{> fetch_work_item/_untagged_head}}) d
                        WHERE p_tag_mode = 'default_and'
                       UNION ALL
                       SELECT g.tag, f.visible_at_ms, f.id
                         FROM pg_catalog.unnest(p_tags) g(tag)
                        CROSS JOIN LATERAL (
                              SELECT q.visible_at_ms, q.id
                                FROM {{schema}}.worker_queue q
                               WHERE (q.tag, q.visible_at_ms, q.id) >= (g.tag, coalesce(v_floor, -9223372036854775807), -9223372036854775807)
                                 AND q.tag <= g.tag
                                 AND q.visible_at_ms <= n.now_ms
                                 AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
                                 AND {{> fetch_work_item/_session_free}}
                               ORDER BY q.tag, q.visible_at_ms, q.id
                               LIMIT 1) f) h
                ORDER BY h.visible_at_ms, h.id) h
        -- One kind's walk per head, in the heads' order (a nested loop the
        -- LIMIT stops at the first row locked); the head's kind is a
        -- one-time filter of each walk, so the other walk never runs.
        CROSS JOIN LATERAL (
              SELECT u.* FROM (
                     SELECT q.id, q.visible_at_ms, q.session_id
                       FROM {{schema}}.worker_queue q
                      WHERE h.tag IS NULL
                        AND q.tag IS NULL
                        AND (q.visible_at_ms, q.id) >= (h.visible_at_ms, h.id)
                        AND q.visible_at_ms <= n.now_ms
                        AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
                        AND {{> fetch_work_item/_session_free}}
                      ORDER BY q.tag, q.visible_at_ms, q.id
                      LIMIT 1
                        FOR UPDATE OF q SKIP LOCKED) u
              UNION ALL
              SELECT t.* FROM (
                     SELECT q.id, q.visible_at_ms, q.session_id
                       FROM {{schema}}.worker_queue q
                      WHERE h.tag IS NOT NULL
                        AND (q.tag, q.visible_at_ms, q.id) >= (h.tag, h.visible_at_ms, h.id)
                        AND q.tag <= h.tag
                        AND q.visible_at_ms <= n.now_ms
                        AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
                        AND {{> fetch_work_item/_session_free}}
                      ORDER BY q.tag, q.visible_at_ms, q.id
                      LIMIT 1
                        FOR UPDATE OF q SKIP LOCKED) t) w
        ORDER BY h.visible_at_ms, h.id
        LIMIT 1) c ON true
  -- Whether another item may be taken: another kind's head (c may be a
  -- later item of its kind than that head, when a concurrent fetch holds
  -- the earlier ones), or an item following c in one of the heads' orders;
  -- a subquery of its own (OFFSET 0 keeps it one) so the next due time's
  -- test does not evaluate it again.
  CROSS JOIN LATERAL (
       SELECT coalesce(c.heads > 1, false)
           OR (p_tag_mode = 'default_and'
               AND {{> fetch_work_item/_untagged_more}})
           OR (EXISTS (
                   SELECT FROM pg_catalog.unnest(p_tags) g(tag)
                    WHERE (SELECT o.id FROM {{schema}}.worker_queue o
                            WHERE (o.tag, o.visible_at_ms, o.id) > (g.tag, c.visible_at_ms, c.id)
                              AND o.tag <= g.tag
                              AND o.visible_at_ms <= n.now_ms
                              AND (o.lock_token IS NULL OR o.locked_until_ms <= n.now_ms)
                            ORDER BY o.tag, o.visible_at_ms, o.id
                            LIMIT 1) IS NOT NULL)) AS more
       OFFSET 0) m;
