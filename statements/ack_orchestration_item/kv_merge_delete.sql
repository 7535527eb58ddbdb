-- ... drop the keys it tombstoned ...
-- params: v_instance text
DELETE FROM {{schema}}.kv_store s
 WHERE s.instance_id = v_instance
   AND s.key IN (SELECT d.key FROM {{schema}}.kv_delta d
                  WHERE d.instance_id = v_instance AND d.value IS NULL);
