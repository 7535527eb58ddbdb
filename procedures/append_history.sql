-- append_history: append events to one execution. Never overwrites: a
-- duplicate (instance, execution, event_id) violates the primary key and the
-- whole append is rejected. The events of one append share one time
-- (created_at_ms), as the events of one turn do. They are counted on the
-- execution's row, or, when the execution has no row (nothing but this
-- call has written it), in events_without_execution
-- (0006_event_counts.sql): get_system_metrics adds the two.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.append_history{{suffix}}(
    p_instance_id  text,
    p_execution_id bigint,
    p_event_ids    bigint[],
    p_event_types  text[],
    p_event_data   text[])
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
BEGIN
    WITH n AS (SELECT {{now_ms}} AS now_ms),
    appended AS (
        INSERT INTO {{schema}}.history (instance_id, execution_id, event_id, event_type, event_data, created_at_ms)
        SELECT p_instance_id, p_execution_id, u.event_id, u.event_type, u.event_data, n.now_ms
          FROM n, ROWS FROM (pg_catalog.unnest(p_event_ids), pg_catalog.unnest(p_event_types),
                             pg_catalog.unnest(p_event_data)) AS u(event_id, event_type, event_data)
        RETURNING 1),
    c AS (SELECT pg_catalog.count(*) AS events FROM appended),
    counted AS (
        UPDATE {{schema}}.executions e
           SET event_count = e.event_count + c.events
          FROM c
         WHERE e.instance_id = p_instance_id AND e.execution_id = p_execution_id
           AND c.events > 0
        RETURNING 1)
    INSERT INTO {{schema}}.events_without_execution (events)
    SELECT c.events
      FROM c
     WHERE c.events > 0 AND NOT EXISTS (SELECT 1 FROM counted);
END
$$;
