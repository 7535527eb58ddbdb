-- The claim took long (a lock wait, a candidate lost to another
-- dispatcher, a large history read): the lease, counted from the start of
-- the call (inline: of the transaction), would be handed out (nearly)
-- spent, and the runtime's renewal and ack would find it expired though
-- nobody else touched the instance. It runs p_lock_timeout_ms (what was
-- left of the caller's timeout when the call started) from now instead,
-- unless it already ends later. Only the claimer holds the lease row, so
-- this waits for nothing.
-- params: v_instance text, v_token text, p_lock_timeout_ms bigint
UPDATE {{schema}}.instance_locks l
   SET locked_until_ms = n.now_ms + p_lock_timeout_ms
  FROM (SELECT {{now_ms}} AS now_ms) n
 WHERE l.instance_id = v_instance AND l.lock_token = v_token
   AND l.locked_until_ms < n.now_ms + p_lock_timeout_ms;
