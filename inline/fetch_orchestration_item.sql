-- fetch_orchestration_item, inline: the statements of procedures/fetch_orchestration_item.sql,
-- run in one transaction by src/inline/orchestration.rs, which holds the loop
-- over (at most 16) candidates and the early returns. Same candidate order,
-- same claim (the instance's instance_claims row, FOR UPDATE SKIP LOCKED),
-- same lease rules.

-- name: candidate
-- The procedure's candidate statement: the oldest visible message (by
-- visibility, then arrival) whose instance has no live lease and passes the
-- capability filter, the non-blocking claim of its instance (evaluated for
-- that one row only), whether another instance is ready too (`more`), now
-- (the claim time), and, when $9 is set and there is no candidate or the
-- first one (nothing skipped) is all there is, the time until the next
-- delayed message or lease expiry, the candidate's own lease counted. Always
-- one row (instance_id NULL: no candidate).
-- $1 skip text[], $2 filter, $3..$8 min/max major/minor/patch, $9 next due,
-- $10 settle ms, $11 the lease (ms from the claim time).
-- lazy_commit: this transaction commits with synchronous_commit off (a
-- lease lost to a crash is harmless; docs/architecture.md, "Durability").
SELECT pg_catalog.set_config('synchronous_commit', 'off', true) AS lazy_commit,
       c.instance_id,
       -- The claim: the instance's claim row, locked without waiting; and
       -- whether the row exists at all (messages written without one, by an
       -- older build or behind the provider's back, have none yet).
       coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = c.instance_id FOR UPDATE SKIP LOCKED), false) AS claimed,
       EXISTS (SELECT 1 FROM {{schema}}.instance_claims k WHERE k.instance_id = c.instance_id) AS has_claim_row,
       m.more,
       n.now_ms,
       CASE WHEN $9::boolean AND NOT m.more AND (c.instance_id IS NULL OR pg_catalog.cardinality($1::text[]) = 0) THEN
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
                    WHERE q.visible_at_ms > n.now_ms),
                  (SELECT pg_catalog.min(l.locked_until_ms) FROM {{schema}}.instance_locks l
                    WHERE l.locked_until_ms > n.now_ms),
                  (SELECT pg_catalog.min(least(g.newest + $10::bigint, g.oldest + 5 * $10::bigint))
                     FROM (SELECT pg_catalog.max(q.visible_at_ms) AS newest, pg_catalog.min(q.visible_at_ms) AS oldest
                             FROM {{schema}}.orchestrator_queue q
                            WHERE q.visible_at_ms > n.now_ms - 5 * $10::bigint AND q.visible_at_ms <= n.now_ms
                            GROUP BY q.instance_id
                           HAVING pg_catalog.max(q.visible_at_ms) > n.now_ms - $10::bigint
                              AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)) g),
                  -- The claimed instance's own lease.
                  CASE WHEN c.instance_id IS NOT NULL THEN n.now_ms + $11::bigint END) - n.now_ms
       END AS next_due_ms
  FROM (SELECT {{now_ms}} AS now_ms) n
  LEFT JOIN LATERAL (
       SELECT q.instance_id, q.visible_at_ms, q.id
         FROM {{schema}}.orchestrator_queue q
        WHERE q.visible_at_ms <= n.now_ms
          AND q.instance_id <> ALL ($1::text[])
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
          AND NOT (q.visible_at_ms > n.now_ms - 5 * $10::bigint
                   AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)
                   AND (q.visible_at_ms > n.now_ms - $10::bigint
                        OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                      WHERE y.instance_id = q.instance_id
                                        AND y.visible_at_ms > n.now_ms - $10::bigint AND y.visible_at_ms <= n.now_ms
                                      LIMIT 1), false)))
          -- A scalar subquery, looked up per candidate row: an EXISTS here
          -- would be planned as a hash of every instance's execution.
          AND (NOT $2::boolean OR coalesce((
               SELECT (e.pinned_major, e.pinned_minor, e.pinned_patch)
                      BETWEEN ($3::bigint, $4::bigint, $5::bigint) AND ($6::bigint, $7::bigint, $8::bigint)
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
                  AND NOT (o.visible_at_ms > n.now_ms - 5 * $10::bigint
                           AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = o.instance_id LIMIT 1), false)
                           AND (o.visible_at_ms > n.now_ms - $10::bigint
                                OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                              WHERE y.instance_id = o.instance_id
                                                AND y.visible_at_ms > n.now_ms - $10::bigint AND y.visible_at_ms <= n.now_ms
                                              LIMIT 1), false)))
                  AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks l
                                   WHERE l.instance_id = o.instance_id AND l.locked_until_ms > n.now_ms)
                ORDER BY o.visible_at_ms, o.id
                LIMIT 1) IS NOT NULL AS more
       OFFSET 0) m;

-- name: lease
-- Take the lease from the claim time (or take over an expired one) unless a
-- live lease was committed since the candidate's snapshot.
-- $1 instance, $2 token, $3 lock timeout ms, $4 claim time. Returns the claim time.
INSERT INTO {{schema}}.instance_locks AS l (instance_id, lock_token, locked_until_ms, locked_at_ms)
SELECT $1::text, $2::text, $4::bigint + $3::bigint, $4::bigint
 WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks x
                    WHERE x.instance_id = $1::text AND x.locked_until_ms > $4::bigint)
ON CONFLICT ON CONSTRAINT instance_locks_pkey DO UPDATE
   SET lock_token = EXCLUDED.lock_token,
       locked_until_ms = EXCLUDED.locked_until_ms,
       locked_at_ms = EXCLUDED.locked_at_ms
 WHERE l.locked_until_ms <= EXCLUDED.locked_at_ms
RETURNING l.locked_at_ms;

-- name: batch
-- Stamp every visible or parked message of the instance. $1 instance,
-- $2 token, $3 now, $4 lock timeout ms.
WITH locked AS (
    UPDATE {{schema}}.orchestrator_queue q
       SET lock_token = $2::text,
           locked_until_ms = $3::bigint + $4::bigint,
           attempt_count = q.attempt_count + 1
     WHERE q.instance_id = $1::text
       AND (q.visible_at_ms <= $3::bigint OR q.orphan_since_ms IS NOT NULL)
 RETURNING q.id, q.work_item, q.attempt_count, q.item_kind, q.orphan_since_ms)
SELECT pg_catalog.array_agg(k.work_item ORDER BY k.id) AS messages,
       pg_catalog.max(k.attempt_count) AS attempts,
       pg_catalog.bool_and(k.item_kind = 'QueueMessage') AS all_queue,
       pg_catalog.bool_or(k.item_kind IN ('StartOrchestration', 'ContinueAsNew')) AS has_start,
       pg_catalog.bool_or(k.orphan_since_ms IS NOT NULL) AS has_parked
  FROM locked k;

-- name: release_lease
-- The batch was consumed since the candidate was read. $1 token.
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = $1::text;

-- name: instance
-- $1 instance.
SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = $1::text;

-- name: unknown_instance
-- An instance without a row: its latest execution in history, and whether
-- that execution has started. $1 instance.
SELECT x.execution_id,
       EXISTS (SELECT 1 FROM {{schema}}.history h
                WHERE h.instance_id = $1::text AND h.execution_id = x.execution_id
                  AND h.event_type = 'OrchestrationStarted') AS started
  FROM (SELECT coalesce(pg_catalog.max(h.execution_id), 1) AS execution_id
          FROM {{schema}}.history h
         WHERE h.instance_id = $1::text) x;

-- name: drop_batch
-- Events queued for an instance that never started are dropped. $1 token.
WITH dropped AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = $1::text)
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = $1::text;

-- name: park
-- Nothing to run yet: park the batch until its retention ends, dropping what
-- outlived it. $1 token, $2 now, $3 orphan retention ms.
WITH dropped AS (
    DELETE FROM {{schema}}.orchestrator_queue q
     WHERE q.lock_token = $1::text
       AND coalesce(q.orphan_since_ms, $2::bigint) + $3::bigint <= $2::bigint),
parked AS (
    UPDATE {{schema}}.orchestrator_queue q
       SET lock_token = NULL, locked_until_ms = NULL, attempt_count = q.attempt_count - 1,
           orphan_since_ms = coalesce(q.orphan_since_ms, $2::bigint),
           visible_at_ms = coalesce(q.orphan_since_ms, $2::bigint) + $3::bigint
     WHERE q.lock_token = $1::text
       AND coalesce(q.orphan_since_ms, $2::bigint) + $3::bigint > $2::bigint)
DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = $1::text;

-- name: unpark
-- Parked messages of an instance that can now run are ordinary messages
-- again. $1 token, $2 now.
UPDATE {{schema}}.orchestrator_queue q
   SET orphan_since_ms = NULL, visible_at_ms = least(q.visible_at_ms, $2::bigint)
 WHERE q.lock_token = $1::text AND q.orphan_since_ms IS NOT NULL;

-- name: snapshot
-- History of the execution, unless larger than $3 bytes (history_error
-- instead, measured from the stored lengths), and the instance's KV store.
-- $1 instance, $2 execution, $3 max history bytes.
SELECT CASE WHEN b.bytes <= $3::bigint THEN
            (SELECT coalesce(pg_catalog.array_agg(h.event_data ORDER BY h.event_id), '{}')
               FROM {{schema}}.history h
              WHERE h.instance_id = $1::text AND h.execution_id = $2::bigint) END AS history,
       CASE WHEN b.bytes > $3::bigint THEN
            pg_catalog.format('history of %s bytes exceeds the %s bytes a fetch reads', b.bytes, $3::bigint) END AS history_error,
       kv.keys AS kv_keys, kv.vals AS kv_values, kv.updated AS kv_updated_ms
  FROM (SELECT coalesce(pg_catalog.sum(pg_catalog.octet_length(h.event_data)), 0) AS bytes
          FROM {{schema}}.history h
         WHERE h.instance_id = $1::text AND h.execution_id = $2::bigint) b,
       (SELECT coalesce(pg_catalog.array_agg(s.key ORDER BY s.key), '{}') AS keys,
               coalesce(pg_catalog.array_agg(s.value ORDER BY s.key), '{}') AS vals,
               coalesce(pg_catalog.array_agg(s.last_updated_at_ms ORDER BY s.key), '{}') AS updated
          FROM {{schema}}.kv_store s
         WHERE s.instance_id = $1::text) kv;

-- name: create_claim
-- The claim row of a candidate that has none (its messages were written by
-- an older build or behind the provider's back); `reclaim` then claims it.
-- Waits only for another transaction creating the same row. $1 instance.
INSERT INTO {{schema}}.instance_claims AS k (instance_id) VALUES ($1::text)
ON CONFLICT (instance_id) DO NOTHING;

-- name: reclaim
-- A claim of a known instance, for a fetch whose snapshot failed and rolled
-- back, or of a candidate whose claim row was just created: its claim row
-- (without waiting) and the clock. $1 instance.
SELECT coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = $1::text FOR UPDATE SKIP LOCKED), false) AS claimed,
       {{now_ms}} AS now_ms;
