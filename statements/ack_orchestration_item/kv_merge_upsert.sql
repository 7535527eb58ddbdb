-- KV at the end of an execution: merge the delta's values into the store ...
-- params: v_instance text
INSERT INTO {{schema}}.kv_store AS s (instance_id, key, value, last_updated_at_ms)
SELECT d.instance_id, d.key, d.value, d.last_updated_at_ms
  FROM {{schema}}.kv_delta d
 WHERE d.instance_id = v_instance AND d.value IS NOT NULL
ON CONFLICT (instance_id, key) DO UPDATE
   SET value = EXCLUDED.value, last_updated_at_ms = EXCLUDED.last_updated_at_ms;
