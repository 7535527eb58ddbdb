-- ack_work_item_and_claim: ack_work_item, then, when the ack found its
-- token, fetch_work_item with the given parameters, in one call and one
-- transaction: a worker that completes an activity claims the next one it
-- will ask for (src/claim_ahead.rs). It runs those procedures' statements
-- (statements/ack_work_item/, statements/fetch_work_item/), not the
-- procedures: a nested call of a SECURITY DEFINER function with settings
-- costs about as much server time as the statement it wraps. The fetch
-- loop below is fetch_work_item's, returning by leaving the loop; change
-- both together (the structure tests compare them).
--
-- The result is ack_work_item's row (acked, wake) followed by
-- fetch_work_item's columns, all NULL when nothing was fetched (the ack did
-- not find its token); lock_token is NULL when the fetch claimed nothing.
--
-- The ack is durable: the fetch's candidate statement makes the
-- transaction commit without waiting for the WAL flush (a lease lost to a
-- crash is harmless), so the setting the transaction began with is put
-- back after the fetch, and the commit waits for the flush as the ack
-- alone would.
--
-- p_claim_token: the token of the lease the claim takes, as
-- fetch_work_item's (NULL: one is made here).
--
-- It waits at most a second for a lock (lock_timeout; 55P03), and the
-- provider retries it off the connection until the lock is gone
-- (docs/architecture.md, "Fetch admission on a shared pool").
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
    p_history_bytes    bigint,
    p_claim_token      text DEFAULT NULL)
RETURNS TABLE (acked boolean, wake text[], lock_token text, work_item text, attempt_count integer,
               more boolean, next_due_ms bigint, scan_floor_ms bigint, prefetched_history text[])
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
SET lock_timeout = '1s'
SECURITY DEFINER
AS $$
#variable_conflict use_column
DECLARE
    v_sync    text := pg_catalog.current_setting('synchronous_commit');
    v_token   text := coalesce(p_claim_token, pg_catalog.gen_random_uuid()::text);
    v_start   bigint := (extract(epoch FROM pg_catalog.statement_timestamp())::numeric * 1000::numeric)::bigint;
    v_lazy    text;
    v_now     bigint;
    v_id      bigint;
    v_session text;
    v_skip    text[] := '{}';
    v_more    boolean;
    v_due     bigint;
    v_taken   boolean;
    v_retry_ms bigint;
    v_retry   bigint;
    v_floor   bigint := p_floor_ms;
    v_scan_floor bigint;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    {{> ack_work_item/ack}}
      INTO acked, wake;
    IF acked THEN
        -- fetch_work_item's loop.
        more := false;
        FOR v_try IN 1..8 LOOP
            IF p_tag_mode = 'default' THEN
                {{> fetch_work_item/candidate_untagged}}
                  INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
            ELSIF p_tag_mode = 'any' THEN
                {{> fetch_work_item/candidate_any}}
                  INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
            ELSE
                {{> fetch_work_item/candidate}}
                  INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
            END IF;
            scan_floor_ms := coalesce(scan_floor_ms, v_scan_floor);
            v_floor := coalesce(v_floor, v_scan_floor);
            IF v_id IS NULL THEN
                next_due_ms := CASE WHEN p_next_due THEN least(v_due, v_retry) END;
                EXIT;
            END IF;

            IF v_session IS NOT NULL THEN
                {{> fetch_work_item/claim_session}}
                  INTO v_taken, v_retry_ms;
                IF NOT v_taken THEN
                    -- Another owner holds the session, or another transaction
                    -- its row: passed over, never waited for; when its row
                    -- was held, the session may be free in a moment.
                    v_skip := v_skip || v_session;
                    v_retry := least(v_retry, v_retry_ms);
                    CONTINUE;
                END IF;
            END IF;

            {{> fetch_work_item/claim}}
              INTO lock_token, work_item, attempt_count, prefetched_history;
            -- A session passed over while its row was held may be free
            -- now: another waiter looks.
            more := v_more OR v_retry IS NOT NULL;
            next_due_ms := v_due;
            EXIT;
        END LOOP;
        PERFORM pg_catalog.set_config('synchronous_commit', v_sync, true);
    END IF;
    RETURN NEXT;
END
$$;
