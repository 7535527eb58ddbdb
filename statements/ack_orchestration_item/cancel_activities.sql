-- Delete the activities the turn cancelled.
-- params: p_cancel_instances text[], p_cancel_executions bigint[], p_cancel_activities bigint[]
DELETE FROM {{schema}}.worker_queue w
 USING ROWS FROM (pg_catalog.unnest(p_cancel_instances), pg_catalog.unnest(p_cancel_executions), pg_catalog.unnest(p_cancel_activities)) AS c(instance_id, execution_id, activity_id)
 WHERE w.instance_id = c.instance_id
   AND w.execution_id = c.execution_id
   AND w.activity_id = c.activity_id;
