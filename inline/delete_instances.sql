-- delete_instances, inline: the statements of procedures/delete_instances.sql,
-- run in one transaction by src/inline/deletion.rs, which raises DX004 where
-- the procedure does. $1 is always the listed ids. The first four statements
-- take the procedure's locks in its order (claim row, leases, messages,
-- instance rows; docs/architecture.md, "Lock order"), each in a statement of
-- its own, so that each sees what the waits before it let commit.

-- name: claim
-- The claim row of every listed id (the fetch's claim), created when
-- missing, in id order, blocking: a fetch that claimed one of them commits
-- its lease first, and a writer of their queues commits first or waits for
-- the purge.
WITH claimed AS (
    INSERT INTO {{schema}}.instance_claims AS c (instance_id)
    SELECT DISTINCT u.id FROM pg_catalog.unnest($1::text[]) AS u(id) ORDER BY 1
    ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false
    RETURNING 1)
SELECT pg_catalog.count(*) AS claimed FROM claimed;

-- name: lock_leases
-- Their leases: an ack or abandon in flight commits first; a lease a fetch
-- took is deleted by the purge, so that fetch's ack fails.
SELECT l.instance_id
  FROM {{schema}}.instance_locks l
 WHERE l.instance_id = ANY ($1::text[])
 ORDER BY l.instance_id
   FOR UPDATE;

-- name: lock_messages
-- Their queued messages.
SELECT q.id
  FROM {{schema}}.orchestrator_queue q
 WHERE q.instance_id = ANY ($1::text[])
 ORDER BY q.instance_id, q.id
   FOR UPDATE;

-- name: lock
-- Their instance rows.
SELECT i.instance_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = ANY ($1::text[])
 ORDER BY i.instance_id
   FOR UPDATE;

-- name: running
-- A listed instance whose current execution is still running.
SELECT i.instance_id
  FROM {{schema}}.instances i
  JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
 WHERE i.instance_id = ANY ($1::text[]) AND e.status = 'Running'
 LIMIT 1;

-- name: orphan
-- A child of a listed instance that is not listed itself: (child, parent).
SELECT i.instance_id, i.parent_instance_id
  FROM {{schema}}.instances i
 WHERE i.parent_instance_id = ANY ($1::text[]) AND NOT (i.instance_id = ANY ($1::text[]))
 LIMIT 1;

-- name: purge
-- Everything the instances own, in one statement; returns the counts.
WITH h AS (DELETE FROM {{schema}}.history h WHERE h.instance_id = ANY ($1::text[]) RETURNING 1),
     e AS (DELETE FROM {{schema}}.executions e WHERE e.instance_id = ANY ($1::text[]) RETURNING 1),
     q AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY ($1::text[]) RETURNING 1),
     w AS (DELETE FROM {{schema}}.worker_queue w WHERE w.instance_id = ANY ($1::text[]) RETURNING 1),
     l AS (DELETE FROM {{schema}}.instance_locks l WHERE l.instance_id = ANY ($1::text[])),
     s AS (DELETE FROM {{schema}}.kv_store s WHERE s.instance_id = ANY ($1::text[])),
     d AS (DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = ANY ($1::text[])),
     c AS (DELETE FROM {{schema}}.instance_claims c WHERE c.instance_id = ANY ($1::text[])),
     i AS (DELETE FROM {{schema}}.instances i WHERE i.instance_id = ANY ($1::text[]))
SELECT (SELECT pg_catalog.count(*) FROM e) AS executions_deleted,
       (SELECT pg_catalog.count(*) FROM h) AS events_deleted,
       (SELECT pg_catalog.count(*) FROM q) + (SELECT pg_catalog.count(*) FROM w) AS queue_messages_deleted;

-- name: sweep
-- Completions committed while the purge waited for their activities (its
-- snapshot could not see them), so no message outlives its instance.
WITH late AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY ($1::text[]) RETURNING 1)
SELECT pg_catalog.count(*) FROM late;
