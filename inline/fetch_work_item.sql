-- fetch_work_item, inline: the statements of procedures/fetch_work_item.sql,
-- run in one transaction by src/inline/worker.rs, which holds the loop over
-- (at most 8) candidates. Same routing, same row locks, same session rules.

-- name: candidate
-- The oldest visible, unlocked (or lock-expired) item this worker may run,
-- row-locked with SKIP LOCKED. $1 tag mode, $2 tags, $3 owner, $4 sessions
-- to skip. Returns the item, its session and now.
SELECT q.id, q.session_id, n.now_ms
  FROM {{schema}}.worker_queue q,
       (SELECT {{now_ms}} AS now_ms) n
 WHERE q.visible_at_ms <= n.now_ms
   AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
   AND CASE $1::text
           WHEN 'any' THEN true
           WHEN 'default' THEN q.tag IS NULL
           WHEN 'tags' THEN q.tag = ANY ($2::text[])
           ELSE q.tag IS NULL OR q.tag = ANY ($2::text[])
       END
   AND (q.session_id IS NULL
        OR ($3::text IS NOT NULL
            AND q.session_id <> ALL ($4::text[])
            AND NOT EXISTS (SELECT 1 FROM {{schema}}.sessions s
                             WHERE s.session_id = q.session_id
                               AND s.locked_until_ms > n.now_ms
                               AND s.owner_id <> $3::text)))
 ORDER BY q.id
 LIMIT 1
   FOR UPDATE OF q SKIP LOCKED;

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
