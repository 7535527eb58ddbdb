-- An instance without a row: its latest execution in history (1 if none),
-- whether that execution has started, and whether a start
-- (StartOrchestration or ContinueAsNew) is queued for it at any visibility:
-- one held back (abandoned with a delay, as duroxide does on a rolling
-- deploy for an orchestration it does not know) is not in the batch, yet the
-- instance will start.
-- params: v_instance text
SELECT x.execution_id,
       EXISTS (SELECT 1 FROM {{schema}}.history h
                WHERE h.instance_id = v_instance AND h.execution_id = x.execution_id
                  AND h.event_type = 'OrchestrationStarted') AS started,
       EXISTS (SELECT 1 FROM {{schema}}.orchestrator_queue q
                WHERE q.instance_id = v_instance
                  AND q.item_kind IN ('StartOrchestration', 'ContinueAsNew')) AS start_queued
  FROM (SELECT coalesce(pg_catalog.max(h.execution_id), 1) AS execution_id
          FROM {{schema}}.history h
         WHERE h.instance_id = v_instance) x;
