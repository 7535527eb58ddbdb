-- Their leases: an ack or abandon in flight commits first; a lease a fetch
-- took is deleted by the purge, so that fetch's ack fails.
-- params: p_ids text[]
SELECT l.instance_id
  FROM {{schema}}.instance_locks l
 WHERE l.instance_id = ANY (p_ids)
 ORDER BY l.instance_id
   FOR UPDATE;
