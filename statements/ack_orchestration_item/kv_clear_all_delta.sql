-- KV: clear every key in the delta ...
-- params: v_instance text, v_now bigint
UPDATE {{schema}}.kv_delta d SET value = NULL, last_updated_at_ms = v_now
 WHERE d.instance_id = v_instance;
