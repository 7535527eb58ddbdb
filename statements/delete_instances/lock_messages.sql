-- Their queued messages.
-- params: p_ids text[]
SELECT q.id
  FROM {{schema}}.orchestrator_queue q
 WHERE q.instance_id = ANY (p_ids)
 ORDER BY q.instance_id, q.id
   FOR UPDATE;
