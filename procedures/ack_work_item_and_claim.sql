-- ack_work_item_and_claim: ack_work_item, then, when the ack found its
-- token, fetch_work_item with the given parameters, in one call and one
-- transaction: a worker that completes an activity claims the next one it
-- will ask for (src/claim_ahead.rs). Each part is the procedure itself, so
-- this one holds no statement of its own.
--
-- The result is ack_work_item's row (acked, wake) followed by
-- fetch_work_item's columns, all NULL when nothing was fetched (the ack did
-- not find its token); lock_token is NULL when the fetch claimed nothing.
--
-- The ack is durable: fetch_work_item makes its own transaction commit
-- without waiting for the WAL flush (a lease lost to a crash is harmless),
-- so the setting the transaction began with is put back after it, and the
-- commit waits for the flush as the ack alone would.
CREATE OR REPLACE FUNCTION {{schema}}.ack_work_item_and_claim{{suffix}}(
    p_lock_token       text,
    p_instance_id      text,
    p_item_kind        text,
    p_work_item        text,
    p_lock_timeout_ms  bigint,
    p_tag_mode         text,
    p_tags             text[],
    p_owner_id         text,
    p_session_lock_ms  bigint,
    p_next_due         boolean,
    p_floor_ms         bigint,
    p_next_floor_margin_ms bigint,
    p_history_bytes    bigint)
RETURNS TABLE (acked boolean, wake text[], lock_token text, work_item text, attempt_count integer,
               more boolean, next_due_ms bigint, scan_floor_ms bigint, prefetched_history text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SECURITY DEFINER
AS $$
#variable_conflict use_column
DECLARE
    v_sync text := pg_catalog.current_setting('synchronous_commit');
BEGIN
    SELECT a.acked, a.wake INTO acked, wake
      FROM {{schema}}.ack_work_item{{suffix}}(p_lock_token, p_instance_id, p_item_kind, p_work_item) a;
    IF acked THEN
        SELECT f.lock_token, f.work_item, f.attempt_count, f.more, f.next_due_ms, f.scan_floor_ms,
               f.prefetched_history
          INTO lock_token, work_item, attempt_count, more, next_due_ms, scan_floor_ms, prefetched_history
          FROM {{schema}}.fetch_work_item{{suffix}}(p_lock_timeout_ms, p_tag_mode, p_tags, p_owner_id,
                                                    p_session_lock_ms, p_next_due, p_floor_ms,
                                                    p_next_floor_margin_ms, p_history_bytes) f;
        PERFORM pg_catalog.set_config('synchronous_commit', v_sync, true);
    END IF;
    RETURN NEXT;
END
$$;
