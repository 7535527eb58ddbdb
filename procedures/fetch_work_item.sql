-- fetch_work_item: claim the activity this worker may run that became
-- visible first (then the first to arrive), unlocked or lock-expired, in one
-- call.
--
-- Tag routing: p_tag_mode 'default' (untagged only), 'tags' (tag in p_tags),
-- 'default_and' (untagged or tag in p_tags), 'any'.
-- Session routing: with p_owner_id NULL only items without a session are
-- eligible; otherwise also items of sessions this owner holds and of sessions
-- nobody holds (no row, or lock expired). Claiming such an item takes the
-- session for p_owner_id for p_session_lock_ms. If another worker wins
-- the session in between, or another transaction holds the session's row
-- (never waited for: statements/fetch_work_item/claim_session.sql), the
-- next candidate is tried.
-- The item is locked until p_lock_timeout_ms after the server received the
-- call (the caller passes what is left of its timeout then; a retry or time
-- queued inside the server does not stretch the lock), and its attempt count
-- is bumped. The session lock counts the same way.
--
-- Returns the claimed item, with `more` telling whether another visible,
-- unlocked item for this worker's tags follows it, or a session was passed
-- over because another transaction held its row (a long-polling caller
-- wakes one more waiter). When nothing is claimed, returns one row whose
-- lock_token is NULL; with p_next_due set, its next_due_ms is the time until
-- the earliest delayed item, item lock expiry or session lock expiry (NULL:
-- nothing is due), measured from the same clock reading as the scan (without
-- p_next_due, NULL); at most 10 ms after a session was passed over because
-- another transaction held its row (that transaction notifies nobody when
-- it ends). A claim of the first candidate with nothing following
-- it reports the same time too, its own new lock counted, so the caller
-- knows the queue holds nothing else for it until then or a notification
-- (src/notify/mod.rs); any other claim reports NULL.
--
-- p_floor_ms: where the scan for candidates starts, a lower bound on every
-- item's visibility (src/scan_floor.rs; NULL: the whole queue). With
-- p_next_floor_margin_ms set, every row returned carries the next floor,
-- scan_floor_ms (that margin below what the first candidate's scan saw),
-- claimed or not.
--
-- p_history_bytes: with a claim, prefetched_history is the history of the
-- item's instance's latest execution up to that many bytes (claim.sql;
-- NULL or zero: not read). It has a default so that a build before it,
-- calling with eight arguments, still claims during a rolling upgrade.
--
-- p_claim_token: the lease's token, made by the caller before the call, so
-- that a caller who never hears the reply (a lost connection, a call given
-- up on or dropped midway) can give back what the call claimed
-- (src/lost_replies.rs). NULL, from a build before it during a rolling
-- upgrade: one is made here.
--
-- It waits at most a second for any lock (lock_timeout; SQLSTATE 55P03,
-- retryable, when it gives up): the claim skips locked rows, so a long
-- wait is for a lock someone else holds on a whole table (an operator's
-- VACUUM FULL or LOCK TABLE, a long migration of this tenant), and while
-- it waits it holds a connection of its tenant's home shard, which other
-- tenants' acks may need (docs/architecture.md, "Fetch admission on
-- a shared pool").
CREATE OR REPLACE FUNCTION {{schema}}.fetch_work_item{{suffix}}(
    p_lock_timeout_ms  bigint,
    p_tag_mode         text,
    p_tags             text[],
    p_owner_id         text,
    p_session_lock_ms  bigint,
    p_next_due         boolean,
    p_floor_ms         bigint,
    p_next_floor_margin_ms bigint,
    p_history_bytes    bigint DEFAULT NULL,
    p_claim_token      text DEFAULT NULL)
RETURNS TABLE (lock_token text, work_item text, attempt_count integer, more boolean, next_due_ms bigint,
               scan_floor_ms bigint, prefetched_history text[])
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
    -- The statements are statements/fetch_work_item/*.sql, which inline
    -- mode runs with this loop in Rust (src/inline/worker.rs).
    FOR v_try IN 1..8 LOOP
        -- A lease, a session taken and an attempt count lost to a crash
        -- are harmless: the activity is delivered again
        -- (docs/architecture.md, "Durability"). So the candidate statement
        -- makes this transaction commit without waiting for its WAL flush;
        -- any later durable commit flushes it with its own. The default
        -- tag filter and 'any' have statements of their own, without the
        -- branches they do not need (candidate.sql).
        IF p_tag_mode = 'default' THEN
            {{> candidate_untagged}}
              INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
        ELSIF p_tag_mode = 'any' THEN
            {{> candidate_any}}
              INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
        ELSE
            {{> candidate}}
              INTO v_lazy, v_id, v_session, v_now, v_more, v_due, v_scan_floor;
        END IF;
        -- The first candidate's next floor is returned for the caller's
        -- next calls; after a full scan it serves this call's later
        -- candidates too (src/scan_floor.rs).
        scan_floor_ms := coalesce(scan_floor_ms, v_scan_floor);
        v_floor := coalesce(v_floor, v_scan_floor);
        IF v_id IS NULL THEN
            next_due_ms := CASE WHEN p_next_due THEN least(v_due, v_retry) END;
            more := false;
            RETURN NEXT;
            RETURN;
        END IF;

        IF v_session IS NOT NULL THEN
            {{> claim_session}}
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

        {{> claim}}
          INTO lock_token, work_item, attempt_count, prefetched_history;
        -- A session passed over while its row was held may be free
        -- now: another waiter looks.
        more := v_more OR v_retry IS NOT NULL;
        next_due_ms := v_due;
        RETURN NEXT;
        RETURN;
    END LOOP;
    -- Every candidate's session was taken by others meanwhile (or its row
    -- held: look again soon).
    more := false;
    next_due_ms := CASE WHEN p_next_due THEN v_retry END;
    RETURN NEXT;
END
$$;
