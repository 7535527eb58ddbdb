-- duroxide-postgres: LISTEN connection sends notifications
-- One notification per (channel, payload) pair of the two arrays ($1, $2),
-- in one transaction that writes no rows and commits with
-- synchronous_commit off (a notification is not durable anyway, and waiting
-- for a flush while holding the notification-queue lock is what made
-- notifying commits queue). The first line names the statement, so
-- pg_stat_activity shows the listening connection as the listener.
SELECT pg_catalog.count(pg_catalog.pg_notify(n.channel, n.payload))
  FROM ROWS FROM (pg_catalog.unnest($1::text[]), pg_catalog.unnest($2::text[])) AS n(channel, payload),
       (SELECT pg_catalog.set_config('synchronous_commit', 'off', true)) AS lazy_commit
