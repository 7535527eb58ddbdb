-- fetch_work_item: claim the oldest visible, unlocked (or lock-expired)
-- activity this worker may run, in one call.
--
-- Tag routing: p_tag_mode 'default' (untagged only), 'tags' (tag in p_tags),
-- 'default_and' (untagged or tag in p_tags), 'any'.
-- Session routing: with p_owner_id NULL only items without a session are
-- eligible; otherwise also items of sessions this owner holds and of sessions
-- nobody holds (no row, or lock expired). Claiming such an item takes the
-- session for p_owner_id for p_session_lock_ms. If another worker wins
-- the session in between, the next candidate is tried.
-- The item is locked until p_lock_timeout_ms after the server received the
-- call (the caller passes what is left of its timeout then; a retry or time
-- queued inside the server does not stretch the lock), and its attempt count
-- is bumped. The session lock counts the same way.
--
-- Returns the claimed item, with `more` telling whether another visible,
-- unlocked item for this worker's tags follows it (a long-polling caller
-- wakes one more waiter). When nothing is claimed and p_next_due is set,
-- returns one row whose lock_token is NULL and whose next_due_ms is the time
-- until the earliest delayed item, item lock expiry or session lock expiry
-- (NULL: nothing is due), measured from the same clock reading as the scan;
-- without p_next_due, no row. A claim of the first candidate with nothing
-- following it reports the same time too, its own new lock counted, so the
-- caller knows the queue holds nothing else for it until then or a
-- notification (src/notify.rs); any other claim reports NULL.
CREATE OR REPLACE FUNCTION {{schema}}.fetch_work_item(
    p_lock_timeout_ms  bigint,
    p_tag_mode         text,
    p_tags             text[],
    p_owner_id         text,
    p_session_lock_ms  bigint,
    p_next_due         boolean)
RETURNS TABLE (lock_token text, work_item text, attempt_count integer, more boolean, next_due_ms bigint)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SECURITY DEFINER
AS $$
#variable_conflict use_column
DECLARE
    v_token   text := pg_catalog.gen_random_uuid()::text;
    v_start   bigint := (extract(epoch FROM pg_catalog.statement_timestamp())::numeric * 1000::numeric)::bigint;
    v_now     bigint;
    v_id      bigint;
    v_session text;
    v_skip    text[] := '{}';
    v_more    boolean;
    v_due     bigint;
BEGIN
    -- A lease, a session taken and an attempt count lost to a crash are
    -- harmless: the activity is delivered again (docs/architecture.md,
    -- "Durability"). So this transaction commits without waiting for its
    -- WAL flush; any later durable commit flushes it with its own.
    PERFORM pg_catalog.set_config('synchronous_commit', 'off', true);
    FOR v_try IN 1..8 LOOP
        -- The same statement as the inline mode's candidate.
        SELECT c.id, c.session_id, n.now_ms,
               m.more,
               CASE WHEN p_next_due AND NOT m.more AND (c.id IS NULL OR pg_catalog.cardinality(v_skip) = 0) THEN
                    least((SELECT pg_catalog.min(q.visible_at_ms) FROM {{schema}}.worker_queue q
                            WHERE q.visible_at_ms > n.now_ms),
                          (SELECT pg_catalog.min(q.locked_until_ms) FROM {{schema}}.worker_queue q
                            WHERE q.lock_token IS NOT NULL AND q.locked_until_ms > n.now_ms),
                          (SELECT pg_catalog.min(s.locked_until_ms) FROM {{schema}}.sessions s
                            WHERE s.locked_until_ms > n.now_ms),
                          -- The claimed item's own lock.
                          CASE WHEN c.id IS NOT NULL THEN v_start + p_lock_timeout_ms END) - n.now_ms
               END AS next_due_ms
          INTO v_id, v_session, v_now, v_more, v_due
          FROM (SELECT {{now_ms}} AS now_ms) n
          LEFT JOIN LATERAL (
               SELECT q.id, q.session_id
                 FROM {{schema}}.worker_queue q
                WHERE q.visible_at_ms <= n.now_ms
                  AND (q.lock_token IS NULL OR q.locked_until_ms <= n.now_ms)
                  AND CASE p_tag_mode
                          WHEN 'any' THEN true
                          WHEN 'default' THEN q.tag IS NULL
                          WHEN 'tags' THEN q.tag = ANY (p_tags)
                          ELSE q.tag IS NULL OR q.tag = ANY (p_tags)
                      END
                  -- Session checks are scalar lookups per candidate row, not a hash
                  -- of every session.
                  AND (q.session_id IS NULL
                       OR (p_owner_id IS NOT NULL
                           AND q.session_id <> ALL (v_skip)
                           AND coalesce((SELECT s.locked_until_ms <= n.now_ms OR s.owner_id = p_owner_id
                                           FROM {{schema}}.sessions s
                                          WHERE s.session_id = q.session_id), true)))
                ORDER BY q.id
                LIMIT 1
                  FOR UPDATE OF q SKIP LOCKED) c ON true
          -- Whether another item follows; a subquery of its own (OFFSET 0 keeps
          -- it one) so the next due time's test does not evaluate it again.
          CROSS JOIN LATERAL (
               SELECT (SELECT o.id FROM {{schema}}.worker_queue o
                        WHERE o.id > c.id
                          AND o.visible_at_ms <= n.now_ms
                          AND (o.lock_token IS NULL OR o.locked_until_ms <= n.now_ms)
                          AND CASE p_tag_mode
                                  WHEN 'any' THEN true
                                  WHEN 'default' THEN o.tag IS NULL
                                  WHEN 'tags' THEN o.tag = ANY (p_tags)
                                  ELSE o.tag IS NULL OR o.tag = ANY (p_tags)
                              END
                        ORDER BY o.id
                        LIMIT 1) IS NOT NULL AS more
               OFFSET 0) m;
        IF v_id IS NULL THEN
            IF p_next_due THEN
                next_due_ms := v_due;
                more := false;
                RETURN NEXT;
            END IF;
            RETURN;
        END IF;

        IF v_session IS NOT NULL THEN
            INSERT INTO {{schema}}.sessions AS s (session_id, owner_id, locked_until_ms, last_activity_at_ms)
            VALUES (v_session, p_owner_id, v_start + p_session_lock_ms, v_now)
            ON CONFLICT ON CONSTRAINT sessions_pkey DO UPDATE
               SET owner_id = EXCLUDED.owner_id,
                   locked_until_ms = EXCLUDED.locked_until_ms,
                   last_activity_at_ms = EXCLUDED.last_activity_at_ms
             WHERE s.locked_until_ms <= v_now OR s.owner_id = EXCLUDED.owner_id;
            IF NOT FOUND THEN
                v_skip := v_skip || v_session;  -- another worker took the session
                CONTINUE;
            END IF;
        END IF;

        RETURN QUERY
        UPDATE {{schema}}.worker_queue q
           SET lock_token = v_token,
               locked_until_ms = v_start + p_lock_timeout_ms,
               attempt_count = q.attempt_count + 1
         WHERE q.id = v_id
        RETURNING v_token, q.work_item, q.attempt_count, v_more, v_due;
        RETURN;
    END LOOP;
    -- Every candidate's session was taken by others meanwhile.
    IF p_next_due THEN
        more := false;
        RETURN NEXT;
    END IF;
END
$$;
