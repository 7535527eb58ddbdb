-- delete_instances: delete a set of instances and everything they own, all
-- or nothing.
--
-- Without p_force, any instance whose current execution is Running or
-- ContinuedAsNew (the instance is between two executions, its next turn
-- queued) is refused (DX004), before any lock is taken and again under
-- the locks. A child of a listed instance that is not itself listed
-- (spawned after the caller walked the tree) is refused too (DX004), so no
-- orphan is ever left. Counts: listed instances, executions, history
-- events, and orchestrator plus worker queue messages.
--
-- Lock order (docs/architecture.md, "Lock order"): claim row ->
-- instance_locks -> orchestrator_queue -> instances -> executions ->
-- history -> kv_delta -> kv_store -> worker_queue, the order the fetch and
-- the ack take them in, each step a statement of its own so that it sees
-- what the waits before it let commit:
--   1. the claim row of every listed id (instance_claims, the fetch's
--      claim), in id order, blocking, created when missing (so a writer
--      creating it commits first, and one arriving later waits for the
--      purge): a fetch that claimed one of them commits its lease first;
--   2. their leases: an ack or abandon in flight commits first, and a lease
--      taken by a fetch before the delete is seen, and deleted below, so
--      that fetch's ack fails (DX001) instead of recreating the instance;
--   3. their queued messages; 4. their instance rows; then the purge.
-- The purge waits for an activity completing meanwhile (ack_work_item
-- deletes the activity and queues its completion in one statement), whose
-- completion its snapshot cannot see: a last statement sweeps the queue
-- again, so no message outlives its instance.
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.delete_instances{{suffix}}(p_ids text[], p_force boolean)
RETURNS TABLE (
    instances_deleted      bigint,
    executions_deleted     bigint,
    events_deleted         bigint,
    queue_messages_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_id         text;
    v_parent     text;
    v_executions bigint;
    v_events     bigint;
    v_messages   bigint;
    v_late       bigint;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/delete_instances/*.sql, which inline
    -- mode runs with these checks in Rust (src/inline/deletion.rs).
    IF coalesce(pg_catalog.array_length(p_ids, 1), 0) = 0 THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    -- Without p_force, a running instance is refused twice over: before
    -- any lock, so that a refusal neither waits for a claim row nor holds
    -- one until its rollback (which PostgreSQL runs after the client has
    -- the error: a fetch meanwhile would skip the instance), and again
    -- under the locks, for an instance that started running in between.
    FOR v_check IN 1..2 LOOP
        IF v_check = 2 THEN
            {{> claim}};
            PERFORM {{> lock_leases}};
            PERFORM {{> lock_messages}};
            PERFORM {{> lock}};
        END IF;
        IF NOT p_force THEN
            {{> running}}
              INTO v_id;
            IF FOUND THEN
                RAISE EXCEPTION USING ERRCODE = 'DX004',
                    MESSAGE = pg_catalog.format('Instance %s is still running. Use force=true to delete anyway, or cancel first.', v_id);
            END IF;
        END IF;
    END LOOP;

    {{> orphan}}
      INTO v_id, v_parent;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX004',
            MESSAGE = pg_catalog.format('Cannot delete: instance %s has child %s that was created after tree traversal (it would be orphaned). Re-fetch the tree and retry.', v_parent, v_id);
    END IF;

    {{> purge}}
      INTO v_executions, v_events, v_messages;

    {{> sweep}}
      INTO v_late;

    RETURN QUERY SELECT pg_catalog.array_length(p_ids, 1)::bigint, v_executions, v_events, v_messages + v_late;
END
$$;
