-- Record the execution's status and output.
-- params: v_instance text, p_execution_id bigint, p_status text, p_output text, v_now bigint
UPDATE {{schema}}.executions e
   SET status = p_status, output = p_output, completed_at_ms = v_now
 WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
