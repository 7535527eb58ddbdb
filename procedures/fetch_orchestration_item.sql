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
-- cannot hold it, as it could an advisory key: issue 17). Every writer of
-- the instance's queue creates that row (migrations/0003_instance_claims.sql).
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
-- expects. Any other batch (an event or cancellation raised just before the
-- start, the completion of a force-deleted instance's child, a webhook for an
-- id that does not exist) is parked: it keeps its attempt counts, records
-- when it was first parked (orphan_since_ms) and becomes visible again only
-- when p_orphan_retention_ms has passed since then, so it is never met again
-- by a fetch before that. A claim of the instance (its start arrived) takes
-- the parked messages with the rest, so an event raised before its start is
-- still delivered, in the first turn. A parked message still orphaned at the
-- end of its retention is dropped. A fetch that parked something and claimed
-- nothing reports a next due time of 0 (look again now).
--
-- p_filter: a capability filter was given; p_min_* / p_max_* bound the pinned
-- duroxide version of the instance's current execution (NULL pins match);
-- a filter with no range (p_min_major NULL) matches nothing.
--
-- Returns the claimed instance, with `more` telling whether another instance
-- had a visible message and no lease (a long-polling caller wakes one more
-- waiter).
-- When nothing is claimed and p_next_due is set, returns one row whose
-- lock_token is NULL and whose next_due_ms is the time until the earliest
-- delayed message or lease expiry (NULL: nothing is due; 0: look again now),
-- measured from the same clock reading as the scan, so nothing that comes due
-- in between is slept past; without p_next_due, no row. A claim of the first
-- candidate with nothing more ready reports the same time too, its own new
-- lease counted, so the caller knows the queue holds nothing else for it
-- until then or a notification (src/notify.rs); any other claim reports NULL.
--
-- p_settle_ms (long-polling callers; 0 turns it off): an instance that still
-- has activities queued or running is passed over while its newest visible
-- message is younger than this, but no longer than five times this after its
-- oldest, so the completions of a fan-out are taken in one turn rather than
-- one turn each even when they trickle in (the window restarts at each), and
-- a steady trickle cannot hold an instance back; the next due time covers it.
CREATE OR REPLACE FUNCTION {{schema}}.fetch_orchestration_item(
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
    p_max_history_bytes   bigint)
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
    kv_keys                text[],
    kv_values              text[],
    kv_updated_ms          bigint[],
    more                   boolean,
    next_due_ms            bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
AS $$
#variable_conflict use_column
DECLARE
    v_token     text := pg_catalog.gen_random_uuid()::text;
    -- When the server received this call: leases count from here (the
    -- caller passes what is left of its timeout at that point), not from a
    -- later candidate, so neither a retry nor time queued inside the server
    -- stretches a lease. The inline twin takes each candidate statement's
    -- own start instead, with the caller's remainder computed for it.
    v_start     bigint := (extract(epoch FROM pg_catalog.statement_timestamp())::numeric * 1000::numeric)::bigint;
    v_now       bigint;
    v_instance  text;
    v_skip      text[] := '{}';
    v_messages  text[];
    v_attempts  integer;
    v_all_queue boolean;
    v_has_start boolean;
    v_has_parked boolean;
    v_parked    boolean := false;
    v_name      text;
    v_version   text;
    v_exec      bigint;
    v_known     boolean;
    v_claimed   boolean;
    v_has_row   boolean;
    v_more      boolean;
    v_due       bigint;
BEGIN
    -- A lease (and what a fetch writes with it: attempt counts, parked or
    -- dropped orphans) lost to a crash is harmless: the messages are
    -- delivered again (docs/architecture.md, "Durability"). So this
    -- transaction commits without waiting for its WAL flush; any later
    -- durable commit (an ack) flushes it with its own.
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    IF p_filter AND p_min_major IS NULL THEN
        RETURN;
    END IF;

    FOR v_try IN 1..16 LOOP
        -- The oldest visible message (by visibility, then arrival) whose
        -- instance has no live lease and passes the capability filter; the
        -- non-blocking claim of its instance (the skip-locked claim, per
        -- instance: a dispatcher that picked an instance being claimed, or
        -- written to, moves on instead of queueing behind, and deadlocking
        -- with, the claimer; the row is the schema's own, so tenants never
        -- contend); whether
        -- another instance is ready too; and, when there is no candidate or
        -- the first one is all there is, the next due time. The inline mode's
        -- candidate statement.
        SELECT c.instance_id,
               -- The claim: the instance's claim row, locked without waiting; and
               -- whether the row exists at all (messages written without one, by an
               -- older build or behind the provider's back, have none yet).
               coalesce((SELECT true FROM {{schema}}.instance_claims k
                          WHERE k.instance_id = c.instance_id FOR UPDATE SKIP LOCKED), false) AS claimed,
               EXISTS (SELECT 1 FROM {{schema}}.instance_claims k WHERE k.instance_id = c.instance_id) AS has_claim_row,
               m.more,
               n.now_ms,
               CASE WHEN p_next_due AND NOT m.more AND (c.instance_id IS NULL OR pg_catalog.cardinality(v_skip) = 0) THEN
                    least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.orchestrator_queue q
                            WHERE q.visible_at_ms > n.now_ms),
                          (SELECT pg_catalog.min(l.locked_until_ms) FROM {{schema}}.instance_locks l
                            WHERE l.locked_until_ms > n.now_ms),
                          (SELECT pg_catalog.min(least(g.newest + p_settle_ms, g.oldest + 5 * p_settle_ms))
                             FROM (SELECT pg_catalog.max(q.visible_at_ms) AS newest, pg_catalog.min(q.visible_at_ms) AS oldest
                                     FROM {{schema}}.orchestrator_queue q
                                    WHERE q.visible_at_ms > n.now_ms - 5 * p_settle_ms AND q.visible_at_ms <= n.now_ms
                                    GROUP BY q.instance_id
                                   HAVING pg_catalog.max(q.visible_at_ms) > n.now_ms - p_settle_ms
                                      AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)) g),
                          -- The claimed instance's own lease.
                          CASE WHEN c.instance_id IS NOT NULL THEN v_start + p_lock_timeout_ms END) - n.now_ms
               END AS next_due_ms
          INTO v_instance, v_claimed, v_has_row, v_more, v_now, v_due
          FROM (SELECT {{now_ms}} AS now_ms) n
          LEFT JOIN LATERAL (
               SELECT q.instance_id, q.visible_at_ms, q.id
                 FROM {{schema}}.orchestrator_queue q
                WHERE q.visible_at_ms <= n.now_ms
                  AND q.instance_id <> ALL (v_skip)
                  AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks l
                                   WHERE l.instance_id = q.instance_id AND l.locked_until_ms > n.now_ms)
                  -- Settling: the messages of an instance that still has activities
                  -- queued or running wait until its newest message is the settle time
                  -- old, so one turn takes the completions of a fan-out that trickle in
                  -- (the window restarts at each), but no longer than five times the
                  -- settle time after its oldest (the rows are read oldest first, so
                  -- this row's age is the oldest's when the instance is first met).
                  -- Long-polling fetches only; 0: off. Scalar subqueries, looked up per
                  -- row, in order of cost: as EXISTS, under NOT (... AND ...), they were
                  -- planned as a hash of the whole (churning) queue.
                  AND NOT (q.visible_at_ms > n.now_ms - 5 * p_settle_ms
                           AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = q.instance_id LIMIT 1), false)
                           AND (q.visible_at_ms > n.now_ms - p_settle_ms
                                OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                              WHERE y.instance_id = q.instance_id
                                                AND y.visible_at_ms > n.now_ms - p_settle_ms AND y.visible_at_ms <= n.now_ms
                                              LIMIT 1), false)))
                  -- A scalar subquery, looked up per candidate row: an EXISTS here
                  -- would be planned as a hash of every instance's execution.
                  AND (NOT p_filter OR coalesce((
                       SELECT (e.pinned_major, e.pinned_minor, e.pinned_patch)
                              BETWEEN (p_min_major, p_min_minor, p_min_patch) AND (p_max_major, p_max_minor, p_max_patch)
                         FROM {{schema}}.instances i
                         JOIN {{schema}}.executions e
                           ON e.instance_id = i.instance_id AND e.execution_id = i.current_execution_id
                        WHERE i.instance_id = q.instance_id
                          AND e.pinned_major IS NOT NULL), true))
                ORDER BY q.visible_at_ms, q.id
                LIMIT 1) c ON true
          -- Whether another instance is ready too; a subquery of its own (OFFSET 0
          -- keeps it one) so the next due time's test does not evaluate it again.
          CROSS JOIN LATERAL (
               SELECT (SELECT o.id FROM {{schema}}.orchestrator_queue o
                        WHERE o.visible_at_ms <= n.now_ms
                          AND (o.visible_at_ms, o.id) > (c.visible_at_ms, c.id)
                          AND o.instance_id <> c.instance_id
                          AND NOT (o.visible_at_ms > n.now_ms - 5 * p_settle_ms
                                   AND coalesce((SELECT true FROM {{schema}}.worker_queue w WHERE w.instance_id = o.instance_id LIMIT 1), false)
                                   AND (o.visible_at_ms > n.now_ms - p_settle_ms
                                        OR coalesce((SELECT true FROM {{schema}}.orchestrator_queue y
                                                      WHERE y.instance_id = o.instance_id
                                                        AND y.visible_at_ms > n.now_ms - p_settle_ms AND y.visible_at_ms <= n.now_ms
                                                      LIMIT 1), false)))
                          AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks l
                                           WHERE l.instance_id = o.instance_id AND l.locked_until_ms > n.now_ms)
                        ORDER BY o.visible_at_ms, o.id
                        LIMIT 1) IS NOT NULL AS more
               OFFSET 0) m;
        IF v_instance IS NOT NULL AND NOT v_claimed AND NOT v_has_row THEN
            -- Messages without a claim row (written by an older build or
            -- behind the provider's back): create it, then claim it. The
            -- insert waits only for another transaction creating the same
            -- row. The inline mode's `create_claim` and `reclaim` statements.
            INSERT INTO {{schema}}.instance_claims AS k (instance_id) VALUES (v_instance)
            ON CONFLICT (instance_id) DO NOTHING;
            v_claimed := coalesce((SELECT true FROM {{schema}}.instance_claims k
                                    WHERE k.instance_id = v_instance FOR UPDATE SKIP LOCKED), false);
        END IF;
        IF v_instance IS NOT NULL AND NOT v_claimed THEN
            v_skip := v_skip || v_instance;
            CONTINUE;
        END IF;
        IF v_instance IS NULL THEN
            IF p_next_due THEN
                next_due_ms := CASE WHEN v_parked THEN 0 ELSE v_due END;
                more := false;
                RETURN NEXT;
            END IF;
            RETURN;
        END IF;

        -- Take the lease (or take over an expired one). The candidate query's
        -- snapshot may predate a lease another dispatcher committed since; this
        -- statement's fresh snapshot sees it and inserts nothing, instead of
        -- colliding on the lease row (ON CONFLICT would lock it), so the lease
        -- holder's ack never waits on this fetch. The lease runs from the
        -- call's start (v_start); it is taken at v_now, when the candidate
        -- was read.
        INSERT INTO {{schema}}.instance_locks AS l (instance_id, lock_token, locked_until_ms, locked_at_ms)
        SELECT v_instance, v_token, v_start + p_lock_timeout_ms, v_now
         WHERE NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks x
                            WHERE x.instance_id = v_instance AND x.locked_until_ms > v_now)
        ON CONFLICT ON CONSTRAINT instance_locks_pkey DO UPDATE
           SET lock_token = EXCLUDED.lock_token,
               locked_until_ms = EXCLUDED.locked_until_ms,
               locked_at_ms = EXCLUDED.locked_at_ms
         WHERE l.locked_until_ms <= EXCLUDED.locked_at_ms
        RETURNING l.locked_at_ms INTO v_now;
        IF NOT FOUND THEN
            v_skip := v_skip || v_instance;  -- another dispatcher holds it
            CONTINUE;
        END IF;

        -- Every visible or parked message of the instance joins the batch, in
        -- order. Only the claimer (holding the claim row) locks these rows,
        -- so this can wait at most for a finishing ack or abandon of an
        -- expired lease.
        WITH locked AS (
            UPDATE {{schema}}.orchestrator_queue q
               SET lock_token = v_token,
                   locked_until_ms = v_start + p_lock_timeout_ms,
                   attempt_count = q.attempt_count + 1
             WHERE q.instance_id = v_instance
               AND (q.visible_at_ms <= v_now OR q.orphan_since_ms IS NOT NULL)
         RETURNING q.id, q.work_item, q.attempt_count, q.item_kind, q.orphan_since_ms)
        SELECT pg_catalog.array_agg(k.work_item ORDER BY k.id), pg_catalog.max(k.attempt_count),
               pg_catalog.bool_and(k.item_kind = 'QueueMessage'),
               pg_catalog.bool_or(k.item_kind IN ('StartOrchestration', 'ContinueAsNew')),
               pg_catalog.bool_or(k.orphan_since_ms IS NOT NULL)
          INTO v_messages, v_attempts, v_all_queue, v_has_start, v_has_parked
          FROM locked k;
        IF v_messages IS NULL THEN
            -- Consumed since the candidate was read: nothing to do here.
            DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
            v_skip := v_skip || v_instance;
            CONTINUE;
        END IF;

        SELECT i.orchestration_name, i.orchestration_version, i.current_execution_id
          INTO v_name, v_version, v_exec
          FROM {{schema}}.instances i
         WHERE i.instance_id = v_instance;
        v_known := FOUND;

        IF NOT v_known THEN
            SELECT coalesce(pg_catalog.max(h.execution_id), 1) INTO v_exec
              FROM {{schema}}.history h
             WHERE h.instance_id = v_instance;
            IF NOT v_has_start AND NOT EXISTS (
                   SELECT 1 FROM {{schema}}.history h
                    WHERE h.instance_id = v_instance AND h.execution_id = v_exec
                      AND h.event_type = 'OrchestrationStarted') THEN
                IF v_all_queue THEN
                    -- Events queued for an instance that never started are dropped.
                    DELETE FROM {{schema}}.orchestrator_queue q WHERE q.lock_token = v_token;
                    DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
                    IF p_next_due THEN
                        next_due_ms := 0;  -- other work may be waiting: look again now
                        more := false;
                        RETURN NEXT;
                    END IF;
                    RETURN;
                END IF;
                -- Nothing to run yet: park the batch (dropping what outlived its
                -- retention) and try the next instance. The inline mode's
                -- `park` statement.
                WITH dropped AS (
                    DELETE FROM {{schema}}.orchestrator_queue q
                     WHERE q.lock_token = v_token
                       AND coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms <= v_now),
                parked AS (
                    UPDATE {{schema}}.orchestrator_queue q
                       SET lock_token = NULL, locked_until_ms = NULL, attempt_count = q.attempt_count - 1,
                           orphan_since_ms = coalesce(q.orphan_since_ms, v_now),
                           visible_at_ms = coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms
                     WHERE q.lock_token = v_token
                       AND coalesce(q.orphan_since_ms, v_now) + p_orphan_retention_ms > v_now)
                DELETE FROM {{schema}}.instance_locks l WHERE l.lock_token = v_token;
                v_skip := v_skip || v_instance;
                v_parked := true;
                CONTINUE;
            END IF;
        END IF;

        IF v_has_parked THEN
            -- Parked messages of an instance that can now run are ordinary
            -- messages again (visible now, should the turn be abandoned).
            UPDATE {{schema}}.orchestrator_queue q
               SET orphan_since_ms = NULL, visible_at_ms = least(q.visible_at_ms, v_now)
             WHERE q.lock_token = v_token AND q.orphan_since_ms IS NOT NULL;
        END IF;

        -- The claim (lease, attempt count) stands whatever happens next: a
        -- history that cannot be read (larger than p_max_history_bytes,
        -- measured from the stored lengths without reading a value; or any
        -- failure reading it, a statement timeout included) comes back as
        -- history_error, so the runtime abandons the turn, the attempts
        -- grow and poison handling ends the instance instead of one
        -- instance failing every fetch that meets it.
        BEGIN
            RETURN QUERY
            SELECT v_token, v_instance, v_name, v_version, v_exec, v_known, v_attempts, v_messages,
                   CASE WHEN b.bytes <= p_max_history_bytes THEN
                        (SELECT coalesce(pg_catalog.array_agg(h.event_data ORDER BY h.event_id), '{}')
                           FROM {{schema}}.history h
                          WHERE h.instance_id = v_instance AND h.execution_id = v_exec) END,
                   CASE WHEN b.bytes > p_max_history_bytes THEN
                        pg_catalog.format('history of %s bytes exceeds the %s bytes a fetch reads', b.bytes, p_max_history_bytes) END,
                   kv.keys, kv.vals, kv.updated, v_more, v_due
              FROM (SELECT coalesce(pg_catalog.sum(pg_catalog.octet_length(h.event_data)), 0) AS bytes
                      FROM {{schema}}.history h
                     WHERE h.instance_id = v_instance AND h.execution_id = v_exec) b,
                   (SELECT coalesce(pg_catalog.array_agg(s.key ORDER BY s.key), '{}') AS keys,
                           coalesce(pg_catalog.array_agg(s.value ORDER BY s.key), '{}') AS vals,
                           coalesce(pg_catalog.array_agg(s.last_updated_at_ms ORDER BY s.key), '{}') AS updated
                      FROM {{schema}}.kv_store s
                     WHERE s.instance_id = v_instance) kv;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            RETURN QUERY
            SELECT v_token, v_instance, v_name, v_version, v_exec, v_known, v_attempts, v_messages,
                   NULL::text[], pg_catalog.format('history could not be read: %s (SQLSTATE %s)', SQLERRM, SQLSTATE),
                   '{}'::text[], '{}'::text[], '{}'::bigint[], v_more, v_due;
        END;
        RETURN;
    END LOOP;
    -- Every candidate was leased by others meanwhile (their acks notify) or
    -- parked (look again now).
    IF p_next_due THEN
        more := false;
        next_due_ms := CASE WHEN v_parked THEN 0 END;
        RETURN NEXT;
    END IF;
END
$$;
