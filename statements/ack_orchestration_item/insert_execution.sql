-- Create the execution unless it exists.
-- params: v_instance text, p_execution_id bigint, v_now bigint
INSERT INTO {{schema}}.executions (instance_id, execution_id, status, started_at_ms)
VALUES (v_instance, p_execution_id, 'Running', v_now)
ON CONFLICT (instance_id, execution_id) DO NOTHING;
