-- Advance the instance's current execution.
-- params: v_instance text, p_execution_id bigint, v_now bigint
UPDATE {{schema}}.instances i
   SET current_execution_id = greatest(i.current_execution_id, p_execution_id),
       updated_at_ms = v_now
 WHERE i.instance_id = v_instance;
