-- Instance counts by the status of their current execution, total
-- executions and total history events, in one snapshot.
SELECT pg_catalog.count(*) AS total_instances,
       (SELECT pg_catalog.count(*) FROM {{schema}}.executions) AS total_executions,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Running') AS running_instances,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Completed') AS completed_instances,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Failed') AS failed_instances,
       (SELECT pg_catalog.count(*) FROM {{schema}}.history) AS total_events
  FROM {{schema}}.instances i
  LEFT JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
