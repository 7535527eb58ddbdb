-- fetch_orchestration_item: claim the next ready instance with its messages,
-- current history and KV snapshot, in one call.
--
-- Candidates are visible messages whose instance has no live lease, in the
-- order they became visible (then of arrival), read along
-- orchestrator_queue_visible_idx: timers waiting far ahead are never scanned,
-- and each check on a candidate (lease, capability filter) is an index lookup
-- for that row, so a fetch costs the same with ten instances or ten million.
-- The claim is the instance's row in instance_claims, locked FOR UPDATE SKIP
-- LOCKED (the skip-locked claim, per instance rather than per message; a row
-- lock needs rights on the table, so a role without rights on the schema
-- cannot hold it, as it could an advisory key; tests/integration/outsiders.rs).
-- Every writer of the instance's queue creates that row
-- (migrations/0003_instance_claims.sql).
-- Candidate message rows are read without row locks on purpose: a
-- dispatcher that skips an instance must not keep one of its messages locked,
-- or the claimer would wait on it (deadlocks under load) or split the batch
-- (breaking FIFO). The instance lease is taken (or taken over once expired)
-- in instance_locks; if another dispatcher won that race, or the instance
-- cannot be processed yet (no instance row, no start message, no history),
-- the next candidate is tried, so concurrent fetchers do not come back
-- empty-handed and one stuck instance never starves the rest. Every visible
-- message of the instance, and every parked one, is stamped with the token
-- and has its attempt count bumped.
--
-- Orphans (an instance with no row, no started history and no start message
-- in its batch): a batch of QueueMessage items only is dropped, as duroxide
-- expects, unless a start is queued for the instance at a later visibility
-- (held back by an abandon with a delay): the instance will start, so the
-- batch is parked like any other and delivered with that start. Any other batch (an event or cancellation raised just before the
-- start, the completion of a force-deleted instance's child, a webhook for an
-- id that does not exist) is parked: it keeps its attempt counts, records
-- when it was first parked (orphan_since_ms) and becomes visible again only
-- when p_orphan_retention_ms has passed since then, so it is never met again
-- by a fetch before that. A claim of the instance (its start arrived) takes
-- the parked messages with the rest, so an event raised before its start is
-- still delivered, in the first turn. A parked message still orphaned at the
-- end of its retention is dropped. Either way the fetch goes on to the next
-- candidate. A fetch that parked or dropped something and claimed nothing
-- reports a next due time of 0 (look again now).
--
-- p_filter: a capability filter was given; p_min_* / p_max_* bound the pinned
-- duroxide version of the instance's current execution (NULL pins match);
-- a filter with no range (p_min_major NULL) matches nothing.
--
-- Returns the claimed instance, with `more` telling whether another instance
-- had a visible message and no lease (a long-polling caller wakes one more
-- waiter).
-- When nothing is claimed, returns one row whose lock_token is NULL; with
-- p_next_due set, its next_due_ms is the time until the earliest delayed
-- message or lease expiry (NULL: nothing is due; 0: look again now),
-- measured from the same clock reading as the scan, so nothing that comes due
-- in between is slept past (without p_next_due, NULL). A claim of the first
-- candidate with nothing more ready reports the same time too, its own new
-- lease counted, so the caller knows the queue holds nothing else for it
-- until then or a notification (src/notify/mod.rs); any other claim reports NULL.
--
-- p_settle_ms (long-polling callers; 0 turns it off): an instance that still
-- has activities queued or running is passed over while its newest visible
-- message is younger than this, but no longer than five times this after its
-- oldest, so the completions of a fan-out are taken in one turn rather than
-- one turn each even when they trickle in (the window restarts at each), and
-- a steady trickle cannot hold an instance back; the next due time covers it.
--
-- p_max_batch_bytes: most bytes of the instance's messages the batch takes
-- (the first message, and any start, always; the rest wait for its next
-- turns), so no amount queued for one instance can make the fetch fail.
--
-- p_floor_ms: where the scan for candidates starts, a lower bound on every
-- message's visibility (src/scan_floor.rs; NULL: the whole queue). With
-- p_next_floor_margin_ms set, every row returned carries the next floor,
-- scan_floor_ms (that margin below what the first candidate's scan saw),
-- claimed or not.
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
CREATE OR REPLACE FUNCTION {{schema}}.fetch_orchestration_item{{suffix}}(
    p_lock_timeout_ms bigint,
    p_filter          boolean,
    p_min_major       bigint,
    p_min_minor       bigint,
    p_min_patch       bigint,
    p_max_major       bigint,
    p_max_minor       bigint,
    p_max_patch       bigint,
    p_next_due        boolean,
    p_settle_ms       bigint,
    p_orphan_retention_ms bigint,
    p_max_history_bytes   bigint,
    p_floor_ms            bigint,
    p_next_floor_margin_ms bigint,
    p_max_batch_bytes     bigint DEFAULT 268435456,
    p_claim_token         text DEFAULT NULL)
RETURNS TABLE (
    lock_token             text,
    instance_id            text,
    orchestration_name     text,
    orchestration_version  text,
    execution_id           bigint,
    instance_known         boolean,
    attempt_count          integer,
    messages               text[],
    history                text[],
    history_error          text,
    history_sqlstate       text,
    kv_keys                text[],
    kv_values              text[],
    kv_updated_ms          bigint[],
    more                   boolean,
    next_due_ms            bigint,
    scan_floor_ms          bigint)
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
    v_token     text := coalesce(p_claim_token, pg_catalog.gen_random_uuid()::text);
    -- When the server received this call: leases count from here (the
    -- caller passes what is left of its timeout at that point), not from a
    -- later candidate, so neither a retry nor time queued inside the server
    -- stretches a lease. Inline mode takes each candidate statement's own
    -- clock instead, with the caller's remainder computed for it. A claim
    -- that took long is the exception: its lease runs from its end
    -- (extend_lease), or it would be handed out spent.
    v_start     bigint := (extract(epoch FROM pg_catalog.statement_timestamp())::numeric * 1000::numeric)::bigint;
    v_lazy      text;
    v_now       bigint;
    v_instance  text;
    v_skip      text[] := '{}';
    v_messages  text[];
    v_attempts  integer;
    v_all_queue boolean;
    v_has_start boolean;
    v_has_parked boolean;
    v_parked    boolean := false;  -- parked or dropped an orphan's batch
    v_name      text;
    v_version   text;
    v_exec      bigint;
    v_known     boolean;
    v_started   boolean;
    v_start_queued boolean;
    v_claimed   boolean;
    v_has_row   boolean;
    v_claimed_at bigint;
    v_more      boolean;
    v_due       bigint;
    v_floor     bigint := p_floor_ms;
    v_scan_floor bigint;
BEGIN
    -- Written for READ COMMITTED; refused before anything is done at a
    -- stricter level (docs/architecture.md, "Isolation").
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING ERRCODE = 'DX006', MESSAGE = pg_catalog.format(
            'duroxide-postgres runs at READ COMMITTED; this transaction is %s',
            pg_catalog.current_setting('transaction_isolation'));
    END IF;
    -- The statements are statements/fetch_orchestration_item/*.sql, which
    -- inline mode runs with this control flow in Rust
    -- (src/inline/orchestration.rs).
    IF p_filter AND p_min_major IS NULL THEN
        RETURN;
    END IF;

    FOR v_try IN 1..16 LOOP
        -- A lease (and what a fetch writes with it: attempt counts, parked
        -- or dropped orphans) lost to a crash is harmless: the messages are
        -- delivered again (docs/architecture.md, "Durability"). So the
        -- candidate statement makes this transaction commit without
        -- waiting for its WAL flush; any later durable commit (an ack)
        -- flushes it with its own.
        {{> candidate}}
          INTO v_lazy, v_instance, v_claimed, v_has_row, v_more, v_now, v_due, v_scan_floor;
        -- The first candidate's next floor is returned for the caller's
        -- next calls; after a full scan it serves this call's later
        -- candidates too (src/scan_floor.rs).
        scan_floor_ms := coalesce(scan_floor_ms, v_scan_floor);
        v_floor := coalesce(v_floor, v_scan_floor);
        IF v_instance IS NOT NULL AND NOT v_claimed AND NOT v_has_row THEN
            -- Messages without a claim row (written by an older build or
            -- behind the provider's back): create it, then claim it.
            {{> create_claim}};
            {{> reclaim}}
              INTO v_claimed, v_claimed_at;
        END IF;
        IF v_instance IS NOT NULL AND NOT v_claimed THEN
            v_skip := v_skip || v_instance;
            CONTINUE;
        END IF;
        IF v_instance IS NULL THEN
            next_due_ms := CASE WHEN p_next_due THEN CASE WHEN v_parked THEN 0 ELSE v_due END END;
            more := false;
            RETURN NEXT;
            RETURN;
        END IF;

        {{> lease}}
          INTO v_now;
        IF NOT FOUND THEN
            v_skip := v_skip || v_instance;  -- another dispatcher holds it
            CONTINUE;
        END IF;

        {{> batch}}
          INTO v_messages, v_attempts, v_all_queue, v_has_start, v_has_parked;
        IF v_messages IS NULL THEN
            -- Consumed since the candidate was read: nothing to do here.
            {{> release_lease}};
            v_skip := v_skip || v_instance;
            CONTINUE;
        END IF;

        {{> instance}}
          INTO v_name, v_version, v_exec;
        v_known := FOUND;

        IF NOT v_known THEN
            {{> unknown_instance}}
              INTO v_exec, v_started, v_start_queued;
            IF NOT v_has_start AND NOT v_started THEN
                IF v_all_queue AND NOT v_start_queued THEN
                    -- Events queued for an instance that never started, and
                    -- will not (no start is queued), are dropped; then, as
                    -- after parking, the next instance is tried, so a flood
                    -- of them costs a fetch per 16, not one each.
                    {{> drop_batch}};
                ELSE
                    -- Nothing to run yet: park the batch (dropping what
                    -- outlived its retention).
                    {{> park}};
                END IF;
                -- Try the next instance.
                v_skip := v_skip || v_instance;
                v_parked := true;
                CONTINUE;
            END IF;
        END IF;

        IF v_has_parked THEN
            {{> unpark}};
        END IF;

        lock_token := v_token;
        instance_id := v_instance;
        orchestration_name := v_name;
        orchestration_version := v_version;
        execution_id := v_exec;
        instance_known := v_known;
        attempt_count := v_attempts;
        messages := v_messages;
        more := v_more;
        next_due_ms := v_due;
        -- The claim (lease, attempt count) stands whatever happens next: a
        -- history that cannot be read (larger than p_max_history_bytes,
        -- measured from the stored lengths without reading a value; or any
        -- failure reading it, a statement timeout included) comes back as
        -- history_error, so the runtime abandons the turn, the attempts
        -- grow and poison handling ends the instance instead of one
        -- instance failing every fetch that meets it. A failure's SQLSTATE
        -- comes back too (history_sqlstate): the provider sets aside,
        -- its attempt not counted, a turn whose read may heal (out of
        -- memory, a statement cancelled; src/error.rs decides which).
        history_sqlstate := NULL;
        BEGIN
            {{> snapshot}}
              INTO history, history_error, kv_keys, kv_values, kv_updated_ms;
        EXCEPTION WHEN lock_not_available THEN
            -- Waited a second for a lock (lock_timeout): not the history's
            -- fault, so no attempt counted. The call fails, retryable, and
            -- its claim rolls back.
            RAISE;
        WHEN OTHERS OR query_canceled THEN
            history := NULL;
            history_error := pg_catalog.format('history could not be read: %s (SQLSTATE %s)', SQLERRM, SQLSTATE);
            history_sqlstate := SQLSTATE;
            kv_keys := '{}';
            kv_values := '{}';
            kv_updated_ms := '{}';
        END;
        -- The lease counts from the call's start (duroxide's contract): a
        -- claim slowed by a lock wait or a large history read would hand
        -- it out (nearly) spent, so past a quarter of it (a second at
        -- most) it runs from now instead. The runtime renews at half the
        -- lease, or 2 s before its end by default, so a claim under that
        -- keeps the lease it was asked for, and skips the write.
        IF {{now_ms}} - v_start > least(p_lock_timeout_ms / 4, 1000) THEN
            {{> extend_lease}};
        END IF;
        RETURN NEXT;
        RETURN;
    END LOOP;
    -- Every candidate was leased by others meanwhile (their acks notify) or
    -- parked (look again now).
    more := false;
    next_due_ms := CASE WHEN p_next_due AND v_parked THEN 0 END;
    RETURN NEXT;
END
$$;
