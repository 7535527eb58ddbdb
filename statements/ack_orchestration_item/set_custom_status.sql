-- Record the custom status (NULL clears it) and bump its version.
-- params: v_instance text, p_custom_status text
UPDATE {{schema}}.instances i
   SET custom_status = p_custom_status, custom_status_version = i.custom_status_version + 1
 WHERE i.instance_id = v_instance;
