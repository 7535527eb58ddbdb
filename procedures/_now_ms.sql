-- _now_ms: the database clock in milliseconds since the Unix epoch.
--
-- clock_timestamp(), not now(): a lease starts when the claim is made, not
-- when the surrounding transaction began.
CREATE OR REPLACE FUNCTION {{schema}}._now_ms()
RETURNS bigint
LANGUAGE sql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint
$$;
