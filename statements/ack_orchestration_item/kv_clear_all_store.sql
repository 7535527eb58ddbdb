-- ... and tombstone every stored key.
-- params: v_instance text, v_now bigint
INSERT INTO {{schema}}.kv_delta (instance_id, key, value, last_updated_at_ms)
SELECT s.instance_id, s.key, NULL, v_now
  FROM {{schema}}.kv_store s
 WHERE s.instance_id = v_instance
ON CONFLICT (instance_id, key) DO NOTHING;
