-- schema_state: what the schema's bookkeeping records, for a role that may
-- not read it (a runtime role with EXECUTE only): the applied migrations,
-- the recorded procedures with whether each function still exists and
-- the crate version that installed it, and the functions left under a
-- recorded procedure's plain name by builds before the per-schema suffix.
-- The same rows as migrate/state.sql, which roles with SELECT on the
-- bookkeeping tables read directly. Lets MigrationMode::Verify and health()
-- work for the runtime role; it reveals names and checksums only.
CREATE OR REPLACE FUNCTION {{schema}}.schema_state{{suffix}}()
RETURNS TABLE (kind text, version bigint, name text, checksum bytea, present boolean,
               crate_version text)
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
    SELECT 'migration'::text, m.version, m.name, m.checksum, true, NULL::text
      FROM {{schema}}._duroxide_migrations m
    UNION ALL
    SELECT 'procedure'::text, NULL::bigint, d.name, d.checksum,
           EXISTS (SELECT 1 FROM pg_catalog.pg_proc f
                    WHERE f.pronamespace = '{{schema}}'::regnamespace
                      AND f.proname = d.name || '{{suffix}}'),
           pg_catalog.to_jsonb(d) OPERATOR(pg_catalog.->>) 'crate_version'
      FROM {{schema}}._duroxide_procedures d
    UNION ALL
    SELECT 'legacy'::text, NULL::bigint, d.name, NULL::bytea, true, NULL::text
      FROM {{schema}}._duroxide_procedures d
     WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_proc f
                    WHERE f.pronamespace = '{{schema}}'::regnamespace
                      AND f.proname = d.name)
     ORDER BY 1, 2, 3
;
END
$$;
