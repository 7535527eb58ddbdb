-- prune_executions: delete old executions of one instance and their history,
-- never the current execution and never a Running one. p_keep_last keeps the
-- N most recent executions (0, 1 and NULL all keep only the current one);
-- p_completed_before (ms) prunes only executions completed before it. Unknown
-- instance: DX003.
--
-- Lock order (docs/architecture.md, "Lock order"): the instance row, then
-- its executions, then their history. No claim or lease is taken: pruning
-- touches no message and never the current or a running execution, the
-- only one an ack writes.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.prune_executions{{suffix}}(
    p_instance_id      text,
    p_keep_last        bigint,
    p_completed_before bigint)
RETURNS TABLE (instances_processed bigint, executions_deleted bigint, events_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_current bigint;
    v_executions bigint;
    v_events     bigint;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/prune_executions/*.sql, which inline
    -- mode runs with this check in Rust (src/inline/deletion.rs).
    {{> lock_instance}}
      INTO v_current;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX003', MESSAGE = pg_catalog.format('Instance %s not found', p_instance_id);
    END IF;

    {{> prune}}
      INTO v_executions, v_events;

    RETURN QUERY SELECT 1::bigint, v_executions, v_events;
END
$$;
