
-- union_all: joins two schemas' parts (tagged.sql) of one statement.
UNION ALL
