-- ack_orchestration_item, inline: the statements of procedures/ack_orchestration_item.sql,
-- in the same order, run in one transaction by src/inline/orchestration.rs,
-- which raises DX001/DX002 and skips steps whose input is empty exactly where
-- the procedure does. $1 is always the instance (or the lock token for the
-- first, second and last statement).

-- name: lease
-- The claim rows of the instances the turn sends to, created or locked, in
-- instance order and before the lease row is locked (the count is complete
-- before the join emits a row to lock); then the lease, and the try of the
-- own instance's claim row without waiting (quiet: no writer of its queue in
-- flight). ON CONFLICT DO UPDATE ... WHERE false locks an existing row
-- without writing a new version of it.
-- $1 token, $2 instances sent to. Returns the instance, the lease end, now
-- and quiet.
WITH claimed AS (
    INSERT INTO {{schema}}.instance_claims AS c (instance_id)
    SELECT DISTINCT u.id FROM pg_catalog.unnest($2::text[]) AS u(id) ORDER BY 1
    ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false
    RETURNING 1)
SELECT l.instance_id, l.locked_until_ms, {{now_ms}} AS now_ms,
       coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = l.instance_id FOR UPDATE SKIP LOCKED), false) AS quiet
  FROM (SELECT pg_catalog.count(*) AS n FROM claimed) k,
       {{schema}}.instance_locks l
 WHERE l.lock_token = $1::text
   FOR UPDATE OF l;

-- name: consume
-- $1 token.
DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = $1::text;

-- name: upsert_instance
-- $2 name, $3 version, $4 execution, $5 parent, $6 now.
INSERT INTO {{schema}}.instances AS i
       (instance_id, orchestration_name, orchestration_version, current_execution_id,
        parent_instance_id, created_at_ms, updated_at_ms)
VALUES ($1::text, $2::text, $3::text, $4::bigint, $5::text, $6::bigint, $6::bigint)
ON CONFLICT (instance_id) DO UPDATE
   SET orchestration_name = EXCLUDED.orchestration_name,
       orchestration_version = EXCLUDED.orchestration_version,
       updated_at_ms = EXCLUDED.updated_at_ms;

-- name: insert_execution
-- $2 execution, $3 now.
INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms)
VALUES ($1::text, $2::bigint, 'Running', $3::bigint)
ON CONFLICT (instance_id, execution_id) DO NOTHING;

-- name: pin_version
-- $2 execution, $3..$5 major, minor, patch.
UPDATE {{schema}}.executions e
   SET pinned_major = $3::bigint, pinned_minor = $4::bigint, pinned_patch = $5::bigint
 WHERE e.instance_id = $1::text AND e.execution_id = $2::bigint;

-- name: advance_execution
-- $2 execution, $3 now.
UPDATE {{schema}}.instances i
   SET current_execution_id = greatest(i.current_execution_id, $2::bigint),
       updated_at_ms = $3::bigint
 WHERE i.instance_id = $1::text;

-- name: append_history
-- $2 execution, $3 event ids, $4 event types, $5 event data, $6 now.
INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
SELECT $1::text, $2::bigint, u.event_id, u.event_type, u.event_data, $6::bigint
  FROM ROWS FROM (pg_catalog.unnest($3::bigint[]), pg_catalog.unnest($4::text[]), pg_catalog.unnest($5::text[])) AS u(event_id, event_type, event_data);

-- name: set_status
-- $2 execution, $3 status, $4 output, $5 now.
UPDATE {{schema}}.executions e
   SET status = $3::text, output = $4::text, completed_at_ms = $5::bigint
 WHERE e.instance_id = $1::text AND e.execution_id = $2::bigint;

-- name: set_custom_status
-- $2 custom status (NULL clears).
UPDATE {{schema}}.instances i
   SET custom_status = $2::text, custom_status_version = i.custom_status_version + 1
 WHERE i.instance_id = $1::text;

-- name: kv_set
-- $2 key, $3 value, $4 updated ms.
INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
VALUES ($1::text, $2::text, $3::text, $4::bigint)
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;

-- name: kv_clear
-- $2 key, $3 now.
INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
VALUES ($1::text, $2::text, NULL, $3::bigint)
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = NULL, last_updated_at_ms = EXCLUDED.last_updated_at_ms;

-- name: kv_clear_all_delta
-- $2 now.
UPDATE {{schema}}.kv_delta d SET value = NULL, last_updated_at_ms = $2::bigint
 WHERE d.instance_id = $1::text;

-- name: kv_clear_all_store
-- $2 now.
INSERT INTO {{schema}}.kv_delta (instance_id, key, value, last_updated_at_ms)
SELECT s.instance_id, s.key, NULL, $2::bigint
  FROM {{schema}}.kv_store s
 WHERE s.instance_id = $1::text
ON CONFLICT (instance_id, key) DO NOTHING;

-- name: kv_merge_upsert
INSERT INTO {{schema}}.kv_store AS s (instance_id, key, value, last_updated_at_ms)
SELECT d.instance_id, d.key, d.value, d.last_updated_at_ms
  FROM {{schema}}.kv_delta d
 WHERE d.instance_id = $1::text AND d.value IS NOT NULL
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;

-- name: kv_merge_delete
DELETE FROM {{schema}}.kv_store s
 WHERE s.instance_id = $1::text
   AND s.key IN (SELECT d.key FROM {{schema}}.kv_delta d
                  WHERE d.instance_id = $1::text AND d.value IS NULL);

-- name: kv_merge_clear
DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = $1::text;

-- name: enqueue_workers
-- $1..$6 items, instances, executions, activities, sessions, tags; $7 now.
INSERT INTO {{schema}}.worker_queue
       (work_item, visible_at_ms, instance_id, execution_id, activity_id, session_id, tag, created_at_ms)
SELECT u.work_item, $7::bigint, u.instance_id, u.execution_id, u.activity_id, u.session_id, u.tag, $7::bigint
  FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::bigint[]), pg_catalog.unnest($4::bigint[]), pg_catalog.unnest($5::text[]), pg_catalog.unnest($6::text[]))
       WITH ORDINALITY AS u(work_item, instance_id, execution_id, activity_id, session_id, tag, n)
 ORDER BY u.n;

-- name: cancel_activities
-- $1..$3 instances, executions, activity ids.
DELETE FROM {{schema}}.worker_queue w
 USING ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::bigint[]), pg_catalog.unnest($3::bigint[])) AS c(instance_id, execution_id, activity_id)
 WHERE w.instance_id = c.instance_id
   AND w.execution_id = c.execution_id
   AND w.activity_id = c.activity_id;

-- name: enqueue_orchestrator
-- $1..$4 instances, kinds, items, visible ms (NULL: now); $5 now.
INSERT INTO {{schema}}.orchestrator_queue (instance_id, item_kind, work_item, visible_at_ms, created_at_ms)
SELECT u.instance_id, u.item_kind, u.work_item, coalesce(u.visible_at_ms, $5::bigint), $5::bigint
  FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[]), pg_catalog.unnest($3::text[]), pg_catalog.unnest($4::bigint[]))
       WITH ORDINALITY AS u(instance_id, item_kind, work_item, visible_at_ms, n)
 ORDER BY u.n;

-- name: release
-- Release the lease and wake waiters at commit: orchestrators for new
-- messages or for messages that arrived while the instance was leased,
-- workers for new activities. $1 token, $2 instance, $3 orchestrator items
-- enqueued or a writer of the instance's queue in flight, $4 worker items
-- enqueued.
WITH released AS (DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = $1::text)
SELECT (SELECT pg_catalog.count(*) FROM (SELECT pg_catalog.pg_notify('{{channel}}', 'orchestrator')
                               WHERE $3::boolean
                                  OR EXISTS (SELECT 1 FROM {{schema}}.orchestrator_queue q
                                              WHERE q.instance_id = $2::text)) o)
     + (SELECT pg_catalog.count(*) FROM (SELECT pg_catalog.pg_notify('{{channel}}', 'worker') WHERE $4::boolean) w);
