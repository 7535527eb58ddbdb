-- The instance's current execution, its row locked.
-- params: p_instance_id text
SELECT i.current_execution_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = p_instance_id
   FOR UPDATE;
