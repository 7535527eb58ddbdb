-- The instance row: name, version, current execution.
-- params: v_instance text
SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = v_instance;
