-- ... and empty the delta.
-- params: v_instance text
DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = v_instance;
