-- delete_instances: delete a set of instances and everything they own, all
-- or nothing.
--
-- Without p_force, any instance whose current execution is Running is
-- refused (DX004). A child of a listed instance that is not itself listed
-- (spawned after the caller walked the tree) is refused too (DX004), so no
-- orphan is ever left. The instance rows are locked first, and removing the
-- lease makes an in-flight ack of a force-deleted instance fail instead of
-- recreating it. Counts: listed instances, executions, history events, and
-- orchestrator plus worker queue messages.
CREATE OR REPLACE FUNCTION {{schema}}.delete_instances(p_ids text[], p_force boolean)
RETURNS TABLE (
    instances_deleted      bigint,
    executions_deleted     bigint,
    events_deleted         bigint,
    queue_messages_deleted bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_id         text;
    v_parent     text;
    v_executions bigint;
    v_events     bigint;
    v_messages   bigint;
BEGIN
    IF coalesce(array_length(p_ids, 1), 0) = 0 THEN
        RETURN QUERY SELECT 0::bigint, 0::bigint, 0::bigint, 0::bigint;
        RETURN;
    END IF;

    PERFORM 1 FROM {{schema}}.instances i WHERE i.instance_id = ANY (p_ids) ORDER BY i.instance_id FOR UPDATE;

    IF NOT p_force THEN
        SELECT i.instance_id INTO v_id
          FROM {{schema}}.instances i
          JOIN {{schema}}.executions e
            ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
         WHERE i.instance_id = ANY (p_ids) AND e.status = 'Running'
         LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'DX004',
                MESSAGE = format('Instance %s is still running. Use force=true to delete anyway, or cancel first.', v_id);
        END IF;
    END IF;

    SELECT i.instance_id, i.parent_instance_id INTO v_id, v_parent
      FROM {{schema}}.instances i
     WHERE i.parent_instance_id = ANY (p_ids) AND NOT (i.instance_id = ANY (p_ids))
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'DX004',
            MESSAGE = format('Cannot delete: instance %s has child %s that was created after tree traversal (it would be orphaned). Re-fetch the tree and retry.', v_parent, v_id);
    END IF;

    WITH h AS (DELETE FROM {{schema}}.history h WHERE h.instance_id = ANY (p_ids) RETURNING 1),
         e AS (DELETE FROM {{schema}}.executions e WHERE e.instance_id = ANY (p_ids) RETURNING 1),
         q AS (DELETE FROM {{schema}}.orchestrator_queue q WHERE q.instance_id = ANY (p_ids) RETURNING 1),
         w AS (DELETE FROM {{schema}}.worker_queue w WHERE w.instance_id = ANY (p_ids) RETURNING 1),
         l AS (DELETE FROM {{schema}}.instance_locks l WHERE l.instance_id = ANY (p_ids)),
         s AS (DELETE FROM {{schema}}.kv_store s WHERE s.instance_id = ANY (p_ids)),
         d AS (DELETE FROM {{schema}}.kv_delta d WHERE d.instance_id = ANY (p_ids)),
         i AS (DELETE FROM {{schema}}.instances i WHERE i.instance_id = ANY (p_ids))
    SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM h), (SELECT count(*) FROM q) + (SELECT count(*) FROM w)
      INTO v_executions, v_events, v_messages;

    RETURN QUERY SELECT array_length(p_ids, 1)::bigint, v_executions, v_events, v_messages;
END
$$;
