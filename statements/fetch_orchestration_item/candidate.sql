-- The oldest visible message (by visibility, then arrival) whose instance
-- has no live lease, is not in v_skip and passes the capability filter; the
-- non-blocking claim of its instance (its claim row, FOR UPDATE SKIP LOCKED,
-- evaluated for that one row only: a dispatcher that picked an instance
-- being claimed, or written to, moves on instead of queueing behind, and
-- deadlocking with, the claimer; the row is the schema's own, so tenants
-- never contend) and whether the row exists at all (messages written
-- without one, by an older build or behind the provider's back, have none
-- yet); whether another instance is ready too (`more`); the clock (the
-- claim time); and, when p_next_due is set and there is no candidate or the
-- first one (nothing skipped) is all there is, the time until the next
-- delayed message, expiry of a lease on queued messages or end of a
-- settle window, the candidate's own lease counted (from v_start; inline
-- mode passes NULL: from the clock read here). Always one row (instance_id
-- NULL: no candidate).
-- The scan starts at v_floor, a lower bound on every message's visibility
-- (src/scan_floor.rs; NULL: the whole index). With p_next_floor_margin_ms
-- set, also returns the next floor (scan_floor_ms): the least of the oldest
-- message's visibility at or above v_floor and the clock, minus that margin.
-- lazy_commit: the transaction commits with synchronous_commit off (a
-- lease lost to a crash is harmless; docs/architecture.md, "Durability").
-- params: v_skip text[], p_filter boolean, p_min_major bigint, p_min_minor bigint, p_min_patch bigint, p_max_major bigint, p_max_minor bigint, p_max_patch bigint, p_next_due boolean, p_settle_ms bigint, v_start bigint, p_lock_timeout_ms bigint, v_floor bigint, p_next_floor_margin_ms bigint
SELECT pg_catalog.set_config('synchronous_commit', 'off', true) AS lazy_commit,
       c.instance_id,
       coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = c.instance_id FOR UPDATE SKIP LOCKED), false) AS claimed,
       EXISTS (SELECT 1 FROM {{schema}}.instance_claims k WHERE k.instance_id = c.instance_id) AS has_claim_row,
       m.more,
       n.now_ms,
       CASE WHEN p_next_due AND NOT m.more AND (c.instance_id IS NULL OR pg_catalog.cardinality(v_skip) = 0) THEN
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
                    WHERE q.visible_at_ms > n.now_ms),
                  -- A lease's expiry, if its instance has messages queued
                  -- (every live lease does: its batch stays queued until the
                  -- ack). Looked up per message from the floor: every lease
                  -- row, read whole, grows with a held snapshot's age.
                  (SELECT pg_catalog.min((SELECT l.locked_until_ms FROM {{schema}}.instance_locks l
                                           WHERE l.instance_id = q.instance_id AND l.locked_until_ms > n.now_ms))
                     FROM {{schema}}.orchestrator_queue q
                    WHERE q.visible_at_ms <= n.now_ms
                      AND q.visible_at_ms >= coalesce(v_floor, -9223372036854775807)),
                  (SELECT pg_catalog.min(least(g.newest + p_settle_ms, g.oldest + 5 * p_settle_ms))
                     FROM (SELECT pg_catalog.max(q.visible_at_ms) AS newest, pg_catalog.min(q.visible_at_ms) AS oldest
                             FROM {{schema}}.orchestrator_queue q
                            WHERE q.visible_at_ms > n.now_ms - 5 * p_settle_ms AND q.visible_at_ms <= n.now_ms
                            GROUP BY q.instance_id
                           HAVING pg_catalog.max(q.visible_at_ms) > n.now_ms - p_settle_ms
                              AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)) g),
                  -- The claimed instance's own lease.
                  CASE WHEN c.instance_id IS NOT NULL THEN coalesce(v_start, n.now_ms) + p_lock_timeout_ms END) - n.now_ms
       END AS next_due_ms,
       CASE WHEN p_next_floor_margin_ms IS NOT NULL THEN
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
                    WHERE q.visible_at_ms >= coalesce(v_floor, -9223372036854775807)),
                  n.now_ms) - p_next_floor_margin_ms
       END AS scan_floor_ms
  FROM (SELECT {{now_ms}} AS now_ms) n
  LEFT JOIN LATERAL (
       SELECT q.instance_id, q.visible_at_ms, q.id
         FROM {{schema}}.orchestrator_queue q
        WHERE q.visible_at_ms <= n.now_ms
          -- The floor as a row comparison: two plain bounds on
          -- visible_at_ms, neither known to a generic plan, look a few rows
          -- wide to the planner, which then sorts every visible row
          -- instead of reading the index from the floor.
          AND (q.visible_at_ms, q.id) >= (coalesce(v_floor, -9223372036854775807), -9223372036854775807)
          AND q.instance_id <> ALL (v_skip)
          AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks l
                           WHERE l.instance_id = q.instance_id AND l.locked_until_ms > n.now_ms)
          -- Settling: the messages of an instance that still has activities
          -- queued or running wait until its newest message is the settle time
          -- old, so one turn takes the completions of a fan-out that trickle in
          -- (the window restarts at each), but no longer than five times the
          -- settle time after its oldest (the rows are read oldest first, so
          -- this row's age is the oldest's when the instance is first met).
          -- Long-polling fetches only; 0: off. Scalar subqueries, looked up per
          -- row, in order of cost: as EXISTS, under NOT (... AND ...), they were
          -- planned as a hash of the whole (churning) queue.
          AND NOT (q.visible_at_ms > n.now_ms - 5 * p_settle_ms
                   AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)
                   AND (q.visible_at_ms > n.now_ms - p_settle_ms
                        OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                      WHERE y.instance_id = q.instance_id
                                        AND y.visible_at_ms > n.now_ms - p_settle_ms AND y.visible_at_ms <= n.now_ms
                                      LIMIT 1), false)))
          -- A scalar subquery, looked up per candidate row: an EXISTS here
          -- would be planned as a hash of every instance's execution.
          AND (NOT p_filter OR coalesce((
               SELECT (e.pinned_major, e.pinned_minor, e.pinned_patch)
                      BETWEEN (p_min_major, p_min_minor, p_min_patch) AND (p_max_major, p_max_minor, p_max_patch)
                 FROM {{schema}}.instances i
                 JOIN {{schema}}.executions e
                   ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                WHERE i.instance_id = q.instance_id
                  AND e.pinned_major IS NOT NULL), true))
        ORDER BY q.visible_at_ms, q.id
        LIMIT 1) c ON true
  -- Whether another instance is ready too; a subquery of its own (OFFSET 0
  -- keeps it one) so the next due time's test does not evaluate it again.
  CROSS JOIN LATERAL (
       SELECT (SELECT o.id FROM {{schema}}.orchestrator_queue o
                WHERE o.visible_at_ms <= n.now_ms
                  AND (o.visible_at_ms, o.id) > (c.visible_at_ms, c.id)
                  AND o.instance_id <> c.instance_id
                  AND NOT (o.visible_at_ms > n.now_ms - 5 * p_settle_ms
                           AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = o.instance_id LIMIT 1), false)
                           AND (o.visible_at_ms > n.now_ms - p_settle_ms
                                OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                              WHERE y.instance_id = o.instance_id
                                                AND y.visible_at_ms > n.now_ms - p_settle_ms AND y.visible_at_ms <= n.now_ms
                                              LIMIT 1), false)))
                  AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks l
                                   WHERE l.instance_id = o.instance_id AND l.locked_until_ms > n.now_ms)
                ORDER BY o.visible_at_ms, o.id
                LIMIT 1) IS NOT NULL AS more
       OFFSET 0) m;
