-- read_history: the events of one execution in event_id order; with
-- p_execution_id NULL, of the instance's latest execution (highest
-- execution_id, 1 when the instance has none). Every row also carries the
-- instance's custom status and its version as of the same snapshot (NULL
-- when the instance has no row): duroxide's client asks for the custom
-- status right after reading the history, and the provider answers that
-- call from these (src/prefetch.rs). With p_status_row set and no event,
-- one row with event_data NULL carries them, so the client's polls of an
-- instance that has not run its first turn yet (or does not exist) are
-- answered too. It defaults to false, so that a build before it, which
-- reads every row as an event, still reads during a rolling upgrade.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.read_history{{suffix}}(
    p_instance_id  text,
    p_execution_id bigint,
    p_status_row   boolean DEFAULT false)
RETURNS TABLE (event_data text, custom_status text, custom_status_version bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    -- The status as two uncorrelated subqueries: each runs once per call
    -- (an init plan), where a join looked the instance up again per event.
    -- The events joined to that one row, so no event still gives a row.
    SELECT h.event_data, st.custom_status, st.custom_status_version
      FROM (SELECT (SELECT i.custom_status FROM {{schema}}.instances i
                     WHERE i.instance_id = p_instance_id) AS custom_status,
                   (SELECT i.custom_status_version FROM {{schema}}.instances i
                     WHERE i.instance_id = p_instance_id) AS custom_status_version) st
      LEFT JOIN {{schema}}.history h
        ON h.instance_id = p_instance_id
       AND h.execution_id = coalesce(p_execution_id,
             (SELECT coalesce(pg_catalog.max(e.execution_id), 1)
                FROM {{schema}}.executions e
               WHERE e.instance_id = p_instance_id))
     WHERE h.event_id IS NOT NULL OR p_status_row
     ORDER BY h.event_id;
END
$$;
