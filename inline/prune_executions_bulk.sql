-- prune_executions_bulk, inline: the statements of procedures/prune_executions_bulk.sql,
-- run in one transaction by src/inline/deletion.rs, which prunes each
-- instance with the inline prune_executions and sums the counts. The
-- targets' instance rows are locked first, in id order (lock_targets), as
-- the procedure does (docs/architecture.md, "Lock order").

-- name: plan_per_call
-- First in the transaction: plan its statements per call, as the procedure
-- does (SET plan_cache_mode = auto), over the provider pool's generic
-- plans: a generic plan of the optional id filter cannot use the primary
-- key, so pruning a few named instances would read them all.
SET LOCAL plan_cache_mode = auto;

-- name: targets
-- Instances matching the filter. $1 ids (NULL: any), $2 current execution
-- completed before (NULL: any), $3 limit.
SELECT i.instance_id
  FROM {{schema}}.instances i
  LEFT JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
 WHERE ($1::text[] IS NULL OR i.instance_id = ANY ($1::text[]))
   AND ($2::bigint IS NULL OR e.completed_at_ms < $2::bigint)
 ORDER BY i.created_at_ms, i.instance_id
 LIMIT $3::bigint;

-- name: lock_targets
-- The targets' instance rows, locked in instance id order (as
-- delete_instances locks them) before any is pruned; an instance deleted
-- since is left out. $1 the targets.
SELECT i.instance_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = ANY ($1::text[])
 ORDER BY i.instance_id
   FOR UPDATE;
