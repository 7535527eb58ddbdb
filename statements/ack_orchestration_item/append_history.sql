-- Append the history delta (a duplicate event id violates the primary key
-- and rolls the turn back) and count it on the execution's row, which the
-- turn has just created or found (insert_execution).
-- params: v_instance text, p_execution_id bigint, p_event_ids bigint[], p_event_types text[], p_event_data text[], v_now bigint
WITH appended AS (
    INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
    SELECT v_instance, p_execution_id, u.event_id, u.event_type, u.event_data, v_now
      FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_event_data)) AS u(event_id, event_type, event_data)
    RETURNING 1)
UPDATE {{schema}}.executions e
   SET event_count = e.event_count + (SELECT pg_catalog.count(*) FROM appended)
 WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
