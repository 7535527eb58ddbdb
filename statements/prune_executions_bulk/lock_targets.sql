-- The targets' instance rows, locked in instance id order (as
-- delete_instances locks them) before any is pruned; an instance deleted
-- since is left out. The locked ids, in that order.
-- params: v_ids text[]
SELECT coalesce(pg_catalog.array_agg(l.instance_id ORDER BY l.instance_id), '{}') AS locked
  FROM (SELECT i.instance_id FROM {{schema}}.instances i
         WHERE i.instance_id = ANY (v_ids) ORDER BY i.instance_id FOR UPDATE) l;
