-- Create the instance, or rename it.
-- params: v_instance text, p_name text, p_version text, p_execution_id bigint, p_parent_instance text, v_now bigint
INSERT INTO {{schema}}.instances AS i
       (instance_id, orchestration_name, orchestration_version, current_execution_id,
        parent_instance_id, created_at_ms, updated_at_ms)
VALUES (v_instance, p_name, p_version, p_execution_id, p_parent_instance, v_now, v_now)
ON CONFLICT (instance_id) DO UPDATE
   SET orchestration_name = EXCLUDED.orchestration_name,
       orchestration_version = EXCLUDED.orchestration_version,
       updated_at_ms = EXCLUDED.updated_at_ms;
