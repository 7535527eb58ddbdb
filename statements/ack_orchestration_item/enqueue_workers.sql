-- Enqueue the turn's activities, in order.
-- params: p_worker_items text[], p_worker_instances text[], p_worker_executions bigint[], p_worker_activities bigint[], p_worker_sessions text[], p_worker_tags text[], v_now bigint
INSERT INTO {{schema}}.worker_queue
       (work_item, visible_at_ms, instance_id, execution_id, activity_id, session_id, tag, created_at_ms)
SELECT u.work_item, v_now, u.instance_id, u.execution_id, u.activity_id, u.session_id, u.tag, v_now
  FROM ROWS FROM (pg_catalog.unnest(p_worker_items), pg_catalog.unnest(p_worker_instances), pg_catalog.unnest(p_worker_executions), pg_catalog.unnest(p_worker_activities), pg_catalog.unnest(p_worker_sessions), pg_catalog.unnest(p_worker_tags))
       WITH ORDINALITY AS u(work_item, instance_id, execution_id, activity_id, session_id, tag, n)
 ORDER BY u.n;
