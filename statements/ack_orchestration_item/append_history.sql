-- Append the history delta (a duplicate event id violates the primary key
-- and rolls the turn back).
-- params: v_instance text, p_execution_id bigint, p_event_ids bigint[], p_event_types text[], p_event_data text[], v_now bigint
INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
SELECT v_instance, p_execution_id, u.event_id, u.event_type, u.event_data, v_now
  FROM ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types), pg_catalog.unnest(p_event_data)) AS u(event_id, event_type, event_data);
