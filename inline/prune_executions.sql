-- prune_executions, inline: the statements of procedures/prune_executions.sql,
-- run in one transaction by src/inline/deletion.rs, which raises DX003 where
-- the procedure does. $1 is always the instance. Locks in the procedure's
-- order: instance row, executions, history (docs/architecture.md, "Lock order").

-- name: lock_instance
-- The instance's current execution, row-locked.
SELECT i.current_execution_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = $1::text
   FOR UPDATE;

-- name: prune
-- Old, finished executions and their history. $2 current execution,
-- $3 keep last (NULL: no limit), $4 completed before (NULL: any).
WITH gone AS (
    DELETE FROM {{schema}}.executions e
     WHERE e.instance_id = $1::text
       AND e.execution_id <> $2::bigint
       AND e.status <> 'Running'
       AND ($3::bigint IS NULL OR e.execution_id NOT IN (
            SELECT k.execution_id FROM {{schema}}.executions k
             WHERE k.instance_id = $1::text
             ORDER BY k.execution_id DESC
             LIMIT $3::bigint))
       AND ($4::bigint IS NULL OR e.completed_at_ms < $4::bigint)
    RETURNING e.execution_id),
events AS (
    DELETE FROM {{schema}}.history h
     WHERE h.instance_id = $1::text AND h.execution_id IN (SELECT gone.execution_id FROM gone)
    RETURNING 1)
SELECT (SELECT pg_catalog.count(*) FROM gone) AS executions_deleted,
       (SELECT pg_catalog.count(*) FROM events) AS events_deleted;
