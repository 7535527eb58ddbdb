-- Instance counts by the status of their current execution, total
-- executions and total history events, in one snapshot. The events are
-- the executions' counts and the events appended to no execution's row
-- (0006_event_counts.sql): the history itself is not read. The executions
-- are read once for both totals (a CTE named twice is computed once).
WITH x AS (
    SELECT pg_catalog.count(*) AS executions,
           coalesce(pg_catalog.sum(a.event_count), 0)
         + (SELECT coalesce(pg_catalog.sum(w.events), 0)
              FROM {{schema}}.events_without_execution w) AS events
      FROM {{schema}}.executions a)
SELECT pg_catalog.count(*) AS total_instances,
       (SELECT x.executions FROM x) AS total_executions,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Running') AS running_instances,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Completed') AS completed_instances,
       pg_catalog.count(*) FILTER (WHERE e.status = 'Failed') AS failed_instances,
       (SELECT x.events FROM x)::bigint AS total_events
  FROM {{schema}}.instances i
  LEFT JOIN {{schema}}.executions e
    ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id;
