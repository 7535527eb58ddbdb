-- Old, finished executions and their history: never v_current, never a
-- Running one; p_keep_last keeps the N most recent (NULL: no limit);
-- p_completed_before (NULL: any). History the executions' rows did not
-- count (appended while a row was missing) comes off
-- events_without_execution (0006_event_counts.sql).
-- params: p_instance_id text, v_current bigint, p_keep_last bigint, p_completed_before bigint
WITH gone AS (
    DELETE FROM {{schema}}.executions e
     WHERE e.instance_id = p_instance_id
       AND e.execution_id <> v_current
       AND e.status <> 'Running'
       AND (p_keep_last IS NULL OR e.execution_id NOT IN (
            SELECT k.execution_id FROM {{schema}}.executions k
             WHERE k.instance_id = p_instance_id
             ORDER BY k.execution_id DESC
             LIMIT p_keep_last))
       AND (p_completed_before IS NULL OR e.completed_at_ms < p_completed_before)
    RETURNING e.execution_id, e.event_count),
events AS (
    DELETE FROM {{schema}}.history h
     WHERE h.instance_id = p_instance_id AND h.execution_id IN (SELECT gone.execution_id FROM gone)
    RETURNING 1),
uncounted AS (
    SELECT (SELECT pg_catalog.count(*) FROM events)
         - (SELECT coalesce(pg_catalog.sum(gone.event_count), 0) FROM gone) AS events),
recount AS (
    INSERT INTO {{schema}}.events_without_execution (events)
    SELECT -u.events FROM uncounted u WHERE u.events <> 0)
SELECT (SELECT pg_catalog.count(*) FROM gone) AS executions_deleted,
       (SELECT pg_catalog.count(*) FROM events) AS events_deleted;
