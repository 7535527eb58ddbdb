-- drop_schema: the tenant and everything in it: tables, rows, functions.
DROP SCHEMA {{schema}} CASCADE
