-- get_system_metrics: instance counts by the status of their current
-- execution, total executions and total history events.
--
-- Plans per call, with sequential scans (plan_cache_mode = auto and
-- enable_seqscan = on, where the queue procedures pin generic plans with
-- them off): the counts read every table whole, which a sequential scan
-- does fastest at any size. duroxide's runtime calls this at every start
-- (and at every gauge poll with observability on).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.get_system_metrics{{suffix}}()
RETURNS TABLE (
    total_instances     bigint,
    total_executions    bigint,
    running_instances   bigint,
    completed_instances bigint,
    failed_instances    bigint,
    total_events        bigint)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = auto
SET enable_seqscan = on
SET jit = off
SET lock_timeout = '1s'
AS $$
#variable_conflict use_column
DECLARE
    v_settings record;
BEGIN
    -- The statements are statements/get_system_metrics/*.sql, which inline
    -- mode runs in one transaction (src/inline/metrics.rs).
    {{> plan_per_call}}
      INTO v_settings;
    RETURN QUERY
    {{> counts}};
END
$$;
