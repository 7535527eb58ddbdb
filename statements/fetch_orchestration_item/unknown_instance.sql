-- An instance without a row: its latest execution in history (1 if none),
-- and whether that execution has started.
-- params: v_instance text
SELECT x.execution_id,
       EXISTS (SELECT 1 FROM {{schema}}.history h
                WHERE h.instance_id = v_instance AND h.execution_id = x.execution_id
                  AND h.event_type = 'OrchestrationStarted') AS started
  FROM (SELECT coalesce(pg_catalog.max(h.execution_id), 1) AS execution_id
          FROM {{schema}}.history h
         WHERE h.instance_id = v_instance) x;
