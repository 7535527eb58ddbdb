-- The execution's history, unless larger than p_max_history_bytes
-- (history_error instead, measured from the stored lengths without reading
-- a value), and the instance's KV store.
-- params: v_instance text, v_exec bigint, p_max_history_bytes bigint
SELECT CASE WHEN b.bytes <= p_max_history_bytes THEN
            (SELECT coalesce(pg_catalog.array_agg(h.event_data ORDER BY h.event_id), '{}')
               FROM {{schema}}.history h
              WHERE h.instance_id = v_instance AND h.execution_id = v_exec) END AS history,
       CASE WHEN b.bytes > p_max_history_bytes THEN
            pg_catalog.format('history of %s bytes exceeds the %s bytes a fetch reads', b.bytes, p_max_history_bytes) END AS history_error,
       kv.keys AS kv_keys, kv.vals AS kv_values, kv.updated AS kv_updated_ms
  FROM (SELECT coalesce(pg_catalog.sum(pg_catalog.octet_length(h.event_data)), 0) AS bytes
          FROM {{schema}}.history h
         WHERE h.instance_id = v_instance AND h.execution_id = v_exec) b,
       (SELECT coalesce(pg_catalog.array_agg(s.key ORDER BY s.key), '{}') AS keys,
               coalesce(pg_catalog.array_agg(s.value ORDER BY s.key), '{}') AS vals,
               coalesce(pg_catalog.array_agg(s.last_updated_at_ms ORDER BY s.key), '{}') AS updated
          FROM {{schema}}.kv_store s
         WHERE s.instance_id = v_instance) kv;
