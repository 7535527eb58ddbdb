-- warm_up: the first calls a tenant's runtime and clients make on this
-- connection, made now, on an instance of its own, and undone.
--
-- A backend compiles a tenant's procedures, plans their statements and loads
-- its tables' catalog entries the first time it serves that tenant: about
-- ten milliseconds of server CPU, against a fraction of one for the same
-- calls warm. Called once on a tenant's home connection when its provider
-- is built (src/warm_up.rs), this pays that cost before the tenant's first
-- orchestration does: a client's start, a turn that completes the instance
-- and schedules an activity, the activity's claim and completion with the
-- next claim, and the client's status reads.
--
-- Everything is undone: the calls run in a block whose end raises an
-- exception it catches, so their writes roll back (plans, compiled
-- procedures and catalog entries are the backend's, and stay). The
-- instance's id is unique to the call, its start message visible since
-- 1970 so the fetch meets it before any real message, and its activity
-- tagged with that id and looked for from its own visibility on (and with
-- the default tag filter, which the runtime's workers use unless told
-- otherwise, from a day ahead), so no real message or activity is claimed,
-- or read beyond what a fetch's scan reads anyway; the locks taken are on
-- the new rows only. Nothing is notified (the procedures return what to
-- wake; this ignores it).
--
-- It waits at most a second for a table lock (lock_timeout): a table
-- locked by someone else, an operator's DDL say, would otherwise hold up
-- the provider's build that calls this, for an optional saving.
--
-- Returns whether the whole sequence ran (false: the fetch met another
-- instance first, or a call failed, a lock wait included; what ran stays
-- warm).
CREATE OR REPLACE FUNCTION {{schema}}.warm_up{{suffix}}()
RETURNS boolean
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
DECLARE
    v_instance text := 'duroxide-postgres warm-up ' || pg_catalog.gen_random_uuid()::text;
    v_now      bigint := (extract(epoch FROM pg_catalog.clock_timestamp())::numeric * 1000::numeric)::bigint;
    v_token    text;
    v_claimed  text;
    v_exec     bigint;
    v_work     text;
    v_ran      boolean := false;
BEGIN
    BEGIN
        PERFORM {{schema}}.enqueue_orchestrator_item{{suffix}}(
            v_instance, 'StartOrchestration', '{}', -v_now);
        SELECT f.lock_token, f.instance_id, f.execution_id INTO v_token, v_claimed, v_exec
          FROM {{schema}}.fetch_orchestration_item{{suffix}}(
               p_lock_timeout_ms => 30000, p_filter => false,
               p_min_major => NULL, p_min_minor => NULL, p_min_patch => NULL,
               p_max_major => NULL, p_max_minor => NULL, p_max_patch => NULL,
               p_next_due => true, p_settle_ms => 50, p_orphan_retention_ms => 60000,
               p_max_history_bytes => 1048576, p_floor_ms => NULL,
               p_next_floor_margin_ms => 1000) f;
        IF v_token IS NOT NULL AND v_claimed = v_instance THEN
            PERFORM {{schema}}.ack_orchestration_item{{suffix}}(
                p_lock_token => v_token, p_execution_id => v_exec,
                p_event_ids => ARRAY[1]::bigint[], p_event_types => ARRAY['OrchestrationStarted'],
                p_event_data => ARRAY['{}'], p_name => 'warm-up', p_version => '0',
                p_parent_instance => NULL, p_status => 'Completed', p_output => '',
                p_pinned_major => 0, p_pinned_minor => 0, p_pinned_patch => 0,
                p_custom_status_set => true, p_custom_status => '',
                p_kv_ops => ARRAY['set'], p_kv_keys => ARRAY['k'], p_kv_values => ARRAY['v'],
                p_kv_updated_ms => ARRAY[v_now],
                p_worker_items => ARRAY['{}'], p_worker_instances => ARRAY[v_instance],
                p_worker_executions => ARRAY[v_exec], p_worker_activities => ARRAY[1]::bigint[],
                p_worker_sessions => ARRAY[NULL]::text[], p_worker_tags => ARRAY[v_instance],
                p_orch_instances => ARRAY[v_instance], p_orch_kinds => ARRAY['QueueMessage'],
                p_orch_items => ARRAY['{}'], p_orch_visible_ms => ARRAY[v_now],
                p_cancel_instances => ARRAY[v_instance], p_cancel_executions => ARRAY[v_exec],
                p_cancel_activities => ARRAY[2]::bigint[]);
            SELECT f.lock_token INTO v_work
              FROM {{schema}}.fetch_work_item{{suffix}}(
                   p_lock_timeout_ms => 30000, p_tag_mode => 'tags', p_tags => ARRAY[v_instance],
                   p_owner_id => NULL, p_session_lock_ms => 30000, p_next_due => true,
                   p_floor_ms => v_now, p_next_floor_margin_ms => 1000,
                   p_history_bytes => 1048576) f;
            IF v_work IS NOT NULL THEN
                -- The claim after it, and a fetch, with duroxide's default
                -- tag filter (untagged only: a statement of its own), from
                -- a floor a day ahead, so that they read no item.
                PERFORM {{schema}}.ack_work_item_and_claim{{suffix}}(
                    p_lock_token => v_work, p_instance_id => v_instance,
                    p_item_kind => 'ActivityCompleted', p_work_item => '{}',
                    p_lock_timeout_ms => 30000, p_tag_mode => 'default', p_tags => '{}',
                    p_owner_id => NULL, p_session_lock_ms => 30000, p_next_due => true,
                    p_floor_ms => v_now + 86400000, p_next_floor_margin_ms => 1000,
                    p_history_bytes => 1048576);
                PERFORM {{schema}}.fetch_work_item{{suffix}}(
                    p_lock_timeout_ms => 30000, p_tag_mode => 'default', p_tags => '{}',
                    p_owner_id => NULL, p_session_lock_ms => 30000, p_next_due => true,
                    p_floor_ms => v_now + 86400000, p_next_floor_margin_ms => 1000,
                    p_history_bytes => 1048576);
                PERFORM {{schema}}.read_history{{suffix}}(v_instance, NULL);
                PERFORM {{schema}}.get_custom_status{{suffix}}(v_instance, 0);
                v_ran := true;
            END IF;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'DXW00', MESSAGE = 'warm-up done: roll back';
    EXCEPTION WHEN SQLSTATE 'DXW00' THEN
        NULL;
    END;
    RETURN v_ran;
EXCEPTION WHEN OTHERS THEN
    RETURN false;
END
$$;
