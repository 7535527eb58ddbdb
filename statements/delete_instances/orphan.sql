-- A child of a listed instance that is not listed itself: (child, parent).
-- params: p_ids text[]
SELECT i.instance_id, i.parent_instance_id
  FROM {{schema}}.instances i
 WHERE i.parent_instance_id = ANY (p_ids) AND NOT (i.instance_id = ANY (p_ids))
 LIMIT 1;
