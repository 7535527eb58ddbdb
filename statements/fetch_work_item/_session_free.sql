-- Part of the candidate statements: whether queued item q may go to owner
-- p_owner_id, as far as its session goes (none, or not held by another
-- live owner, and not passed over by this call, v_skip). Scalar lookups per
-- candidate row, not a hash of every session.
(q.session_id IS NULL
 OR (p_owner_id IS NOT NULL
     AND q.session_id <> ALL (v_skip)
     AND coalesce((SELECT s.locked_until_ms <= n.now_ms OR s.owner_id = p_owner_id
                     FROM {{schema}}.sessions s
                    WHERE s.session_id = q.session_id), true)))
