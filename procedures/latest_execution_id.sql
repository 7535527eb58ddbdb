-- latest_execution_id: an instance's highest execution id, 1 when it has none.
CREATE OR REPLACE FUNCTION {{schema}}.latest_execution_id(p_instance_id text)
RETURNS SETOF bigint
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT coalesce(max(e.execution_id), 1) FROM {{schema}}.executions e WHERE e.instance_id = p_instance_id;
$$;
