-- KV: set one key in the execution's delta.
-- params: v_instance text, v_key text, v_value text, v_updated_ms bigint
INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
VALUES (v_instance, v_key, v_value, v_updated_ms)
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
