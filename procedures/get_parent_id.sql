-- get_parent_id: an instance's parent (NULL for a root). No row: not found.
CREATE OR REPLACE FUNCTION {{schema}}.get_parent_id{{suffix}}(p_instance_id text)
RETURNS TABLE (parent_instance_id text)
LANGUAGE plpgsql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET enable_seqscan = off
SET jit = off
AS $$
#variable_conflict use_column
BEGIN
RETURN QUERY
    SELECT i.parent_instance_id FROM {{schema}}.instances i WHERE i.instance_id = p_instance_id;
END
$$;
