-- delete_instance_bulk, inline: the statements of procedures/delete_instance_bulk.sql,
-- run in one transaction by src/inline/deletion.rs, which collects every
-- matching root's tree and deletes them all with one inline delete_instances
-- (force), taking its locks in the one order over all of them at once
-- (docs/architecture.md, "Lock order").

-- name: plan_per_call
-- First in the transaction: plan its statements per call, as the procedure
-- does (SET plan_cache_mode = auto), over the provider pool's generic
-- plans: a generic plan of the optional id filter cannot use the primary
-- key, so deleting a few named instances would read them all.
SET LOCAL plan_cache_mode = auto;

-- name: roots
-- Terminal root instances matching the filter. $1 ids (NULL: any),
-- $2 completed before (NULL: any), $3 limit.
SELECT i.instance_id
  FROM {{schema}}.instances i
  JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
 WHERE i.parent_instance_id IS NULL
   AND e.status IN ('Completed', 'Failed', 'ContinuedAsNew')
   AND ($1::text[] IS NULL OR i.instance_id = ANY ($1::text[]))
   AND ($2::bigint IS NULL OR e.completed_at_ms < $2::bigint)
 ORDER BY i.created_at_ms, i.instance_id
 LIMIT $3::bigint;

-- name: tree
-- A root and all its descendants. $1 root.
WITH RECURSIVE tree(id) AS (
    SELECT $1::text
    UNION
    SELECT c.instance_id FROM {{schema}}.instances c JOIN tree t ON c.parent_instance_id = t.id)
SELECT pg_catalog.array_agg(tree.id) FROM tree;
