-- The claim rows of the instances the turn sends to, created or locked, in
-- instance order and before the lease row is locked (the count is complete
-- before the join emits a row to lock); then the lease, the clock, and the
-- try of the own instance's claim row without waiting (quiet: no writer of
-- its queue in flight). ON CONFLICT DO UPDATE ... WHERE false locks an
-- existing row without writing a new version of it. A turn that sends to
-- one other instance share-locks its row when the row is in the snapshot,
-- as the other writers of one instance's queue do, so children finishing
-- together do not wait for each other; sends to several instances lock
-- them all exclusively, in one ordered pass (a share pass then an
-- exclusive one would lock out of order), and so do sends to the turn's
-- own instance (a timer), which the try below would otherwise upgrade,
-- one more lock record. No row: unknown token.
-- params: p_lock_token text, p_orch_instances text[]
WITH targets AS (
    SELECT DISTINCT u.id FROM pg_catalog.unnest(p_orch_instances) AS u(id)),
shared AS MATERIALIZED (
    SELECT c.instance_id FROM {{schema}}.instance_claims c
     WHERE c.instance_id IN (SELECT t.id FROM targets t)
       AND (SELECT pg_catalog.count(*) FROM targets) = 1
       AND NOT EXISTS (SELECT 1 FROM {{schema}}.instance_locks o
                        WHERE o.lock_token = p_lock_token AND o.instance_id = c.instance_id)
       FOR SHARE OF c),
claimed AS (
    INSERT INTO {{schema}}.instance_claims AS c (instance_id)
    SELECT t.id FROM targets t
     WHERE NOT EXISTS (SELECT 1 FROM shared s WHERE s.instance_id = t.id)
     ORDER BY 1
    ON CONFLICT (instance_id) DO UPDATE SET instance_id = EXCLUDED.instance_id WHERE false
    RETURNING 1)
SELECT l.instance_id, l.locked_until_ms, {{now_ms}} AS now_ms,
       coalesce((SELECT true FROM {{schema}}.instance_claims k
                  WHERE k.instance_id = l.instance_id FOR UPDATE SKIP LOCKED), false) AS quiet
  FROM (SELECT pg_catalog.count(*) AS n FROM claimed) k,
       {{schema}}.instance_locks l
 WHERE l.lock_token = p_lock_token
   FOR UPDATE OF l;
