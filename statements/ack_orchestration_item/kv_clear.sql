-- KV: clear one key in the delta (a tombstone).
-- params: v_instance text, v_key text, v_now bigint
INSERT INTO {{schema}}.kv_delta AS d (instance_id, key, value, last_updated_at_ms)
VALUES (v_instance, v_key, NULL, v_now)
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = NULL, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
