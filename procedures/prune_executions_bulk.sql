-- prune_executions_bulk: prune_executions over the instances matching the
-- filter (p_ids, p_completed_before on the current execution), whatever
-- their status, that have an execution the options prune (p_keep_last,
-- p_prune_completed_before), oldest first, at most p_limit of them, in one
-- transaction; counts are summed, instances_processed counting the
-- instances pruned. (Chosen without asking whether they had anything to
-- prune, the oldest p_limit instances were taken again and again, and
-- the prunable ones behind them never reached.)
--
-- Plans per call (plan_cache_mode = auto, where every other procedure pins
-- generic plans): a generic plan of the optional id filter cannot use the
-- primary key, so pruning a few named instances would read them all.
--
-- Lock order (docs/architecture.md, "Lock order"): the instance rows of
-- every target are locked first, in instance id order as delete_instances
-- locks them, then each instance's executions and history are pruned. (Taken
-- one instance at a time, oldest first, they deadlocked with a delete of the
-- same instances.) An instance deleted since it was chosen is skipped.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.prune_executions_bulk{{suffix}}(
    p_ids                    text[],
    p_completed_before       bigint,
    p_limit                  bigint,
    p_keep_last              bigint,
    p_prune_completed_before bigint)
RETURNS TABLE (instances_processed bigint, executions_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = auto
SET enable_seqscan = on
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_settings record;
    v_ids  text[];
    v_id   text;
    v_one  record;
    v_inst bigint := 0;
    v_exec bigint := 0;
    v_evts bigint := 0;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/prune_executions_bulk/*.sql, which
    -- inline mode runs with this loop in Rust (src/inline/deletion.rs).
    {{> plan_per_call}}
      INTO v_settings;
    {{> targets}}
      INTO v_ids;
    {{> lock_targets}}
      INTO v_ids;

    FOREACH v_id IN ARRAY v_ids LOOP
        SELECT * INTO v_one FROM {{schema}}.prune_executions{{suffix}}(v_id, p_keep_last, p_prune_completed_before);
        v_inst := v_inst + v_one.instances_processed;
        v_exec := v_exec + v_one.executions_deleted;
        v_evts := v_evts + v_one.events_deleted;
    END LOOP;
    RETURN QUERY SELECT v_inst, v_exec, v_evts;
END
$$;
