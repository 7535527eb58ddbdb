-- A listed instance that is still running: its current execution is
-- Running, or ContinuedAsNew (its next execution's turn is queued and not
-- yet acked).
-- params: p_ids text[]
SELECT i.instance_id
  FROM {{schema}}.instances i
  JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
 WHERE i.instance_id = ANY (p_ids) AND e.status IN ('Running', 'ContinuedAsNew')
 LIMIT 1;
