-- Take the item's session for the owner, from v_start for
-- p_session_lock_ms, unless another live owner holds it, without ever
-- waiting for a session row another transaction holds (a fetch taking it,
-- an ack or a renewal touching it, a sweep): the fetch passes over such a
-- session as it passes over a locked queue row. The row is locked FOR
-- UPDATE SKIP LOCKED and only when the owner may take it (expired, or its
-- own), so a session the fetch does not take stays unlocked (unless it
-- changed after this statement's snapshot: the lock on its newest version
-- is then kept, and other fetches pass over it in turn). A missing row is
-- created (ON CONFLICT DO NOTHING: it waits only for another fetch
-- creating the same row, which waits for nothing after that).
-- Waiting here let two fetches of different owners deadlock (40P01) when
-- each held a session the other was about to take
-- (sessions::fetches_racing_for_expired_sessions_never_deadlock).
-- One row: taken, whether the session is the owner's now; retry_ms, when
-- not taken and no live owner other than this one held it in the snapshot
-- (its row was held, or created or deleted meanwhile): look again that
-- soon, since whoever held the row notifies nobody when it lets go.
-- params: v_session text, p_owner_id text, v_start bigint, p_session_lock_ms bigint, v_now bigint
WITH seen AS (
    SELECT s.locked_until_ms <= v_now OR s.owner_id = p_owner_id AS free
      FROM {{schema}}.sessions s
     WHERE s.session_id = v_session),
renewed AS (
    UPDATE {{schema}}.sessions s
       SET owner_id = p_owner_id,
           locked_until_ms = v_start + p_session_lock_ms,
           last_activity_at_ms = v_now
     WHERE s.session_id = (SELECT l.session_id FROM {{schema}}.sessions l
                            WHERE l.session_id = v_session
                              AND (l.locked_until_ms <= v_now OR l.owner_id = p_owner_id)
                              FOR UPDATE SKIP LOCKED)
    RETURNING 1),
created AS (
    INSERT INTO {{schema}}.sessions AS s (session_id, owner_id, locked_until_ms, last_activity_at_ms)
    SELECT v_session, p_owner_id, v_start + p_session_lock_ms, v_now
     WHERE NOT EXISTS (SELECT 1 FROM seen)
    ON CONFLICT ON CONSTRAINT sessions_pkey DO NOTHING
    RETURNING 1)
SELECT t.taken,
       CASE WHEN NOT t.taken AND coalesce((SELECT x.free FROM seen x), true) THEN 10::bigint END AS retry_ms
  FROM (SELECT EXISTS (SELECT 1 FROM renewed) OR EXISTS (SELECT 1 FROM created) AS taken) t;
