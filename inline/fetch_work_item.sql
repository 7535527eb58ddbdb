-- fetch_work_item, inline: the statements of procedures/fetch_work_item.sql,
-- run in one transaction by src/inline/worker.rs, which holds the loop over
-- (at most 8) candidates. Same routing, same row locks, same session rules.

-- name: candidate
-- The procedure's candidate statement: the oldest visible, unlocked (or
-- lock-expired) item this worker may run, row-locked with SKIP LOCKED;
-- now; whether another such item follows (`more`); and, when $5 is set and
-- nothing was found or the first candidate (no session skipped) is all there
-- is, the time until the next delayed item, item lock expiry or session lock
-- expiry, the candidate's own lock counted. Always one row (id NULL: nothing
-- found).
-- $1 tag mode, $2 tags, $3 owner, $4 sessions to skip, $5 next due, $6 the
-- lock (ms from now).
-- lazy_commit: this transaction commits with synchronous_commit off (a
-- lease lost to a crash is harmless; docs/architecture.md, "Durability").
SELECT pg_catalog.set_config('synchronous_commit', 'off', true) AS lazy_commit,
       c.id, c.session_id, n.now_ms,
       m.more,
       CASE WHEN $5::boolean AND NOT m.more AND (c.id IS NULL OR pg_catalog.cardinality($4::text[]) = 0) THEN
            least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.worker_queue q
                    WHERE q.visible_at_ms > n.now_ms),
                  (SELECT pg_catalog.min(q.locked_until_ms) FROM {{schema}}.worker_queue q
                    WHERE q.lock_token IS NOT NULL AND q.locked_until_ms > n.now_ms),
                  (SELECT pg_catalog.min(s.locked_until_ms) FROM {{schema}}.sessions s
                    WHERE s.locked_until_ms > n.now_ms),
                  -- The claimed item's own lock.
                  CASE WHEN c.id IS NOT NULL THEN n.now_ms + $6::bigint END) - n.now_ms
       END AS next_due_ms
  FROM (SELECT {{now_ms}} AS now_ms) n
  LEFT JOIN LATERAL (
       SELECT q.id, q.session_id
         FROM {{schema}}.worker_queue q
        WHERE q.visible_at_ms <= n.now_ms
          AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
          AND CASE $1::text
                  WHEN 'any' THEN true
                  WHEN 'default' THEN q.tag IS NULL
                  WHEN 'tags' THEN q.tag = ANY ($2::text[])
                  ELSE q.tag IS NULL OR q.tag = ANY ($2::text[])
              END
          -- Session checks are scalar lookups per candidate row, not a hash
          -- of every session.
          AND (q.session_id IS NULL
               OR ($3::text IS NOT NULL
                   AND q.session_id <> ALL ($4::text[])
                   AND coalesce((SELECT s.locked_until_ms <= n.now_ms OR s.owner_id = $3::text
                                   FROM {{schema}}.sessions s
                                  WHERE s.session_id = q.session_id), true)))
        ORDER BY q.id
        LIMIT 1
          FOR UPDATE OF q SKIP LOCKED) c ON true
  -- Whether another item follows; a subquery of its own (OFFSET 0 keeps
  -- it one) so the next due time's test does not evaluate it again.
  CROSS JOIN LATERAL (
       SELECT (SELECT o.id FROM {{schema}}.worker_queue o
                WHERE o.id > c.id
                  AND o.visible_at_ms <= n.now_ms
                  AND (o.lock_token IS NULL OR o.locked_until_ms <= n.now_ms)
                  AND CASE $1::text
                          WHEN 'any' THEN true
                          WHEN 'default' THEN o.tag IS NULL
                          WHEN 'tags' THEN o.tag = ANY ($2::text[])
                          ELSE o.tag IS NULL OR o.tag = ANY ($2::text[])
                      END
                ORDER BY o.id
                LIMIT 1) IS NOT NULL AS more
       OFFSET 0) m;

-- name: claim_session
-- Take the item's session for the owner unless another live owner holds it.
-- $1 session, $2 owner, $3 now, $4 session lock ms.
INSERT INTO {{schema}}.sessions AS s (session_id, owner_id, locked_until_ms, last_activity_at_ms)
VALUES ($1::text, $2::text, $3::bigint + $4::bigint, $3::bigint)
ON CONFLICT ON CONSTRAINT sessions_pkey DO UPDATE
   SET owner_id = EXCLUDED.owner_id,
       locked_until_ms = EXCLUDED.locked_until_ms,
       last_activity_at_ms = EXCLUDED.last_activity_at_ms
 WHERE s.locked_until_ms <= $3::bigint OR s.owner_id = EXCLUDED.owner_id
RETURNING 1;

-- name: claim
-- Lock the item. $1 id, $2 token, $3 now, $4 lock timeout ms.
UPDATE {{schema}}.worker_queue q
   SET lock_token = $2::text,
       locked_until_ms = $3::bigint + $4::bigint,
       attempt_count = q.attempt_count + 1
 WHERE q.id = $1::bigint
RETURNING q.lock_token, q.work_item, q.attempt_count;
