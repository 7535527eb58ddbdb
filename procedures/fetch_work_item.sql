-- fetch_work_item: claim the oldest visible, unlocked (or lock-expired)
-- activity this worker may run, in one call.
--
-- Tag routing: p_tag_mode 'default' (untagged only), 'tags' (tag in p_tags),
-- 'default_and' (untagged or tag in p_tags), 'any'.
-- Session routing: with p_owner_id NULL only items without a session are
-- eligible; otherwise also items of sessions this owner holds and of sessions
-- nobody holds (no row, or lock expired). Claiming such an item takes the
-- session for p_owner_id until now + p_session_lock_ms. If another worker wins
-- the session in between, the next candidate is tried.
-- The item is locked until now + p_lock_timeout_ms and its attempt count bumped.
CREATE OR REPLACE FUNCTION {{schema}}.fetch_work_item(
    p_lock_timeout_ms  bigint,
    p_tag_mode         text,
    p_tags             text[],
    p_owner_id         text,
    p_session_lock_ms  bigint)
RETURNS TABLE (lock_token text, work_item text, attempt_count integer)
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_token   text := gen_random_uuid()::text;
    v_now     bigint;
    v_id      bigint;
    v_session text;
    v_skip    text[] := '{}';
BEGIN
    FOR v_try IN 1..8 LOOP
        v_now := {{now_ms}};
        SELECT q.id, q.session_id INTO v_id, v_session
          FROM {{schema}}.worker_queue q
         WHERE q.visible_at_ms <= v_now
           AND (q.lock_token IS NULL OR q.locked_until_ms <= v_now)
           AND CASE p_tag_mode
                   WHEN 'any' THEN true
                   WHEN 'default' THEN q.tag IS NULL
                   WHEN 'tags' THEN q.tag = ANY (p_tags)
                   ELSE q.tag IS NULL OR q.tag = ANY (p_tags)
               END
           AND (q.session_id IS NULL
                OR (p_owner_id IS NOT NULL
                    AND q.session_id <> ALL (v_skip)
                    AND NOT EXISTS (SELECT 1 FROM {{schema}}.sessions s
                                     WHERE s.session_id = q.session_id
                                       AND s.locked_until_ms > v_now
                                       AND s.owner_id <> p_owner_id)))
         ORDER BY q.id
         LIMIT 1
         FOR UPDATE OF q SKIP LOCKED;
        IF NOT FOUND THEN
            RETURN;
        END IF;

        IF v_session IS NOT NULL THEN
            INSERT INTO {{schema}}.sessions AS s (session_id, owner_id, locked_until_ms, last_activity_at_ms)
            VALUES (v_session, p_owner_id, v_now + p_session_lock_ms, v_now)
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
               locked_until_ms = v_now + p_lock_timeout_ms,
               attempt_count = q.attempt_count + 1
         WHERE q.id = v_id
        RETURNING v_token, q.work_item, q.attempt_count;
        RETURN;
    END LOOP;
END
$$;
