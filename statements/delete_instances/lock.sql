-- Their instance rows.
-- params: p_ids text[]
SELECT i.instance_id
  FROM {{schema}}.instances i
 WHERE i.instance_id = ANY (p_ids)
 ORDER BY i.instance_id
   FOR UPDATE;
