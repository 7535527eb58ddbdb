-- Record the duroxide version the execution is pinned to.
-- params: v_instance text, p_execution_id bigint, p_pinned_major bigint, p_pinned_minor bigint, p_pinned_patch bigint
UPDATE {{schema}}.executions e
   SET pinned_major = p_pinned_major, pinned_minor = p_pinned_minor, pinned_patch = p_pinned_patch
 WHERE e.instance_id = v_instance AND e.execution_id = p_execution_id;
