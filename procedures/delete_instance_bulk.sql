-- delete_instance_bulk: delete finished root instances (Completed or
-- Failed; never Running or ContinuedAsNew, which is between two executions
-- of a running instance, never sub-orchestrations whose parent exists)
-- with their whole sub-orchestration trees, in one transaction. Filters are ANDed: p_ids
-- (NULL: any), p_completed_before (ms; NULL: any), then p_limit roots.
--
-- Plans per call (plan_cache_mode = auto, where every other procedure pins
-- generic plans): a generic plan of the optional id filter cannot use the
-- primary key, so deleting a few named instances would read them all.
--
-- Lock order (docs/architecture.md, "Lock order"): the trees are collected
-- first and deleted by one delete_instances call, which takes every lock in
-- the one order over all of them at once. (Deleted tree by tree, the claim
-- keys and rows of one tree were held while the next tree's were taken: a
-- delete of instances from two trees could hold one and wait for the other.)
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.delete_instance_bulk{{suffix}}(
    p_ids              text[],
    p_completed_before bigint,
    p_limit            bigint)
RETURNS TABLE (
    instances_deleted      bigint,
    executions_deleted     bigint,
    events_deleted         bigint,
    queue_messages_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = auto
SET enable_seqscan = on
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_settings record;
    v_root  text;
    v_tree  text[];
    v_ids   text[] := '{}';
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/delete_instance_bulk/*.sql, which
    -- inline mode runs with this loop in Rust (src/inline/deletion.rs).
    {{> plan_per_call}}
      INTO v_settings;
    FOR v_root IN
        {{> roots}}
    LOOP
        {{> tree}}
          INTO v_tree;
        v_ids := v_ids || v_tree;
    END LOOP;
    RETURN QUERY SELECT * FROM {{schema}}.delete_instances{{suffix}}(v_ids, true);
END
$$;
