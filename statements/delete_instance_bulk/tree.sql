-- A root and all its descendants.
-- params: v_root text
WITH RECURSIVE tree(id) AS (
    SELECT v_root
    UNION
    SELECT c.instance_id FROM {{schema}}.instances c JOIN tree t ON c.parent_instance_id = t.id)
SELECT pg_catalog.array_agg(tree.id) AS tree FROM tree;
