//! The SQL-mode dispatch, in one place.
//!
//! Most operations send the same statement text in both modes (in inline
//! mode a single-statement procedure's call renders as its body, see
//! [`crate::inline::render`]), so they need no driver. The eight procedures
//! with control flow do: in procedure mode each is one call
//! ([`procedures`], below), in inline mode a transaction driven from Rust
//! ([`crate::inline`]). [`Driver`] picks one of the two for each of them,
//! and for the warm-up (the procedure `warm_up`, or
//! [`crate::inline::warm_up`]);
//! the operation modules build parameters and decode results once and ask
//! their store's driver for the part in between. Nothing else in the crate
//! branches on the mode to run an operation.

use sqlx::PgConnection;

use crate::admin::MetricsRow;
use crate::codec::AttemptClock;
use crate::config::SqlMode;
use crate::deletion::{DeletedRow, FilterParams, PruneParams, PrunedRow};
use crate::error::Result;
use crate::inline;
use crate::lost_replies::Claiming;
use crate::notify::Polled;
use crate::orchestration_queue::{self, AckParams, FetchedRow};
use crate::pooler::{Bounded, Db};
use crate::store::Store;
use crate::worker_queue::{self, FetchedItem, WorkAck};

/// How a store runs the operations whose SQL differs between the modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Driver {
    /// One call of the stored procedure ([`SqlMode::StoredProcedures`]).
    Procedures,
    /// The procedure's statements in one transaction from the client
    /// ([`SqlMode::InlineSql`]).
    Inline,
}

impl Driver {
    /// The driver of `mode`.
    pub(crate) fn new(mode: SqlMode) -> Self {
        match mode {
            SqlMode::StoredProcedures => Self::Procedures,
            SqlMode::InlineSql => Self::Inline,
        }
    }

    /// The mode this driver runs.
    pub(crate) fn mode(self) -> SqlMode {
        match self {
            Self::Procedures => SqlMode::StoredProcedures,
            Self::Inline => SqlMode::InlineSql,
        }
    }

    /// What a single-statement operation that waits at most a second for a
    /// lock (an ack, abandon or renewal of a lease already held, an
    /// enqueue, an append, a read) runs its statement on: the procedure's
    /// call alone (the procedure pins `lock_timeout`), or in inline mode the
    /// statement alone on connections that carry the lock timeout, else in
    /// a transaction that sets it ([`Bounded`]).
    pub(crate) fn bounded(self, db: &Db) -> Bounded<'_> {
        Bounded {
            db,
            bounded: self == Self::Inline,
        }
    }

    /// One claim attempt on the orchestrator queue, for `claim` (its lease
    /// token; told when the claim may be made, [`Claiming::sent`]).
    pub(crate) async fn fetch_orchestration(
        self,
        s: &Store,
        params: orchestration_queue::FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<Polled<FetchedRow>> {
        match self {
            Self::Procedures => procedures::fetch_orchestration(s, params, clock, claim).await,
            Self::Inline => {
                // Sent once a connection is in hand, as a procedure call;
                // the transaction then runs to its end even if this call is
                // dropped.
                let conn = crate::observe::acquire(&s.pool, SqlMode::InlineSql).await?;
                claim.sent();
                inline::orchestration::fetch(s, params, clock, claim.token(), conn).await
            }
        }
    }

    /// Commits one turn; returns what to wake (see [`Store::woke`]).
    pub(crate) async fn ack_orchestration(
        self,
        s: &Store,
        params: AckParams,
    ) -> Result<Vec<String>> {
        match self {
            Self::Procedures => procedures::ack_orchestration(s, &params).await,
            Self::Inline => inline::turn_ack::ack(s, params).await,
        }
    }

    /// One claim attempt on the worker queue, for `claim`.
    pub(crate) async fn fetch_work(
        self,
        s: &Store,
        params: &worker_queue::FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<Polled<FetchedItem>> {
        match self {
            Self::Procedures => procedures::fetch_work(s, params, clock, claim).await,
            Self::Inline => {
                let conn = crate::observe::acquire(&s.pool, SqlMode::InlineSql).await?;
                claim.sent();
                inline::worker::fetch(s, params.clone(), clock, claim.token(), conn).await
            }
        }
    }

    /// Acks an activity and, when the ack found its token, claims the next
    /// with `params` for `claim` ([`crate::claim_ahead`]): (acked, what to
    /// wake, the claim attempt when acked).
    pub(crate) async fn ack_work_and_claim(
        self,
        s: &Store,
        ack: WorkAck<'_>,
        params: &worker_queue::FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<(bool, Vec<String>, Option<Polled<FetchedItem>>)> {
        match self {
            Self::Procedures => procedures::ack_work_and_claim(s, ack, params, clock, claim).await,
            Self::Inline => {
                let conn = crate::observe::acquire(&s.pool, SqlMode::InlineSql).await?;
                claim.sent();
                inline::worker::ack_and_fetch(s, &ack, params.clone(), clock, claim.token(), conn)
                    .await
            }
        }
    }

    /// Runs the warm-up on `conn` ([`crate::warm_up`]); whether all of it
    /// ran.
    pub(crate) async fn warm_up(self, s: &Store, conn: &mut PgConnection) -> Result<bool> {
        match self {
            Self::Procedures => Ok(sqlx::query_scalar(&s.sql.admin.warm_up)
                .fetch_one(&mut *conn)
                .await?),
            Self::Inline => inline::warm_up::run(s, conn).await,
        }
    }

    /// Deletes `ids` and all they own, atomically.
    pub(crate) async fn delete_instances(
        self,
        s: &Store,
        ids: Vec<&str>,
        force: bool,
    ) -> Result<DeletedRow> {
        match self {
            Self::Procedures => procedures::delete_instances(s, ids, force).await,
            Self::Inline => Ok(DeletedRow::from_counts(
                inline::deletion::delete_instances(s, owned(&ids), force).await?,
            )),
        }
    }

    /// Deletes the terminal root trees a filter matches.
    pub(crate) async fn delete_instance_bulk(
        self,
        s: &Store,
        (ids, before, limit): FilterParams<'_>,
    ) -> Result<DeletedRow> {
        match self {
            Self::Procedures => procedures::delete_instance_bulk(s, (ids, before, limit)).await,
            Self::Inline => Ok(DeletedRow::from_counts(
                inline::deletion::delete_instance_bulk(s, ids.as_deref().map(owned), before, limit)
                    .await?,
            )),
        }
    }

    /// Prunes old executions of one instance.
    pub(crate) async fn prune_executions(
        self,
        s: &Store,
        instance_id: &str,
        (keep_last, completed_before): PruneParams,
    ) -> Result<PrunedRow> {
        match self {
            Self::Procedures => {
                procedures::prune_executions(s, instance_id, (keep_last, completed_before)).await
            }
            Self::Inline => Ok(PrunedRow::from_counts(
                inline::deletion::prune_executions(
                    s,
                    instance_id.to_string(),
                    keep_last,
                    completed_before,
                )
                .await?,
            )),
        }
    }

    /// The system-wide counts, planned for the tables as they are.
    pub(crate) async fn system_metrics(self, s: &Store) -> Result<MetricsRow> {
        match self {
            Self::Procedures => Ok(sqlx::query_as(&s.sql.admin.metrics)
                .fetch_one(&s.pool)
                .await?),
            Self::Inline => inline::metrics::system_metrics(s).await,
        }
    }

    /// Prunes old executions of every instance a filter matches.
    pub(crate) async fn prune_executions_bulk(
        self,
        s: &Store,
        (ids, before, limit): FilterParams<'_>,
        (keep_last, prune_before): PruneParams,
    ) -> Result<PrunedRow> {
        match self {
            Self::Procedures => {
                procedures::prune_executions_bulk(
                    s,
                    (ids, before, limit),
                    (keep_last, prune_before),
                )
                .await
            }
            Self::Inline => Ok(PrunedRow::from_counts(
                inline::deletion::prune_executions_bulk(
                    s,
                    ids.as_deref().map(owned),
                    before,
                    limit,
                    keep_last,
                    prune_before,
                )
                .await?,
            )),
        }
    }
}

fn owned(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_string()).collect()
}

/// [`Driver::Procedures`]: each operation one call of its procedure.
mod procedures {
    use sqlx::postgres::PgArguments;
    use sqlx::query::Query;
    use sqlx::{FromRow, Postgres, Row};

    use crate::codec::AttemptClock;
    use crate::config::SqlMode;
    use crate::deletion::{DeletedRow, FilterParams, PruneParams, PrunedRow};
    use crate::error::Result;
    use crate::lost_replies::Claiming;
    use crate::notify::Polled;
    use crate::orchestration_queue::{AckParams, FetchParams, FetchedRow};
    use crate::scan_floor::Scan;
    use crate::store::Store;
    use crate::worker_queue::{self, FetchedItem, WorkAck};

    /// One call of `fetch_orchestration_item`.
    pub(super) async fn fetch_orchestration(
        s: &Store,
        params: FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<Polled<FetchedRow>> {
        // The lease is counted once a connection is in hand.
        let conn = crate::observe::acquire(&s.pool, SqlMode::StoredProcedures).await?;
        claim.sent();
        let mut query = sqlx::query(&s.sql.orchestration.fetch)
            .bind(clock.lease_ms(params.lock_timeout))
            .bind(params.has_filter);
        for bound in params.bounds {
            query = query.bind(bound);
        }
        let scan = s.floors.orchestrator.start();
        let query = query
            .bind(params.next_due)
            .bind(params.settle_ms)
            .bind(params.orphan_retention_ms)
            .bind(params.max_history_bytes)
            .bind(scan.floor)
            .bind(scan.next_floor_margin_ms())
            .bind(params.max_batch_bytes)
            .bind(claim.token());
        let row = s.pool.fetch_optional_on(conn, query).await?;
        if let Some(row) = &row {
            s.floors
                .orchestrator
                .set(scan, row.try_get("scan_floor_ms")?);
        }
        Ok(match row {
            None => Polled::Empty { next_due_ms: None },
            Some(row) => match row.try_get::<Option<String>, _>("lock_token")? {
                None => Polled::Empty {
                    next_due_ms: row.try_get("next_due_ms")?,
                },
                Some(_) => Polled::Found {
                    more: row.try_get("more")?,
                    next_due_ms: row.try_get("next_due_ms")?,
                    item: FetchedRow::from_row(&row)?,
                },
            },
        })
    }

    /// One call of `ack_orchestration_item`; what to wake.
    pub(super) async fn ack_orchestration(s: &Store, a: &AckParams) -> Result<Vec<String>> {
        let wake: Option<Vec<String>> = sqlx::query_scalar(&s.sql.orchestration.ack)
            .bind(&a.lock_token)
            .bind(a.execution_id)
            .bind(&a.event_ids)
            .bind(&a.event_types)
            .bind(&a.event_data)
            .bind(&a.name)
            .bind(&a.version)
            .bind(&a.parent_instance)
            .bind(&a.status)
            .bind(&a.output)
            .bind(a.pinned[0])
            .bind(a.pinned[1])
            .bind(a.pinned[2])
            .bind(a.custom_status_set)
            .bind(&a.custom_status)
            .bind(&a.kv_ops)
            .bind(&a.kv_keys)
            .bind(&a.kv_values)
            .bind(&a.kv_updated_ms)
            .bind(&a.worker_items)
            .bind(&a.worker_instances)
            .bind(&a.worker_executions)
            .bind(&a.worker_activities)
            .bind(&a.worker_sessions)
            .bind(&a.worker_tags)
            .bind(&a.orch_instances)
            .bind(&a.orch_kinds)
            .bind(&a.orch_items)
            .bind(&a.orch_visible_ms)
            .bind(&a.cancel_instances)
            .bind(&a.cancel_executions)
            .bind(&a.cancel_activities)
            .fetch_one(&s.pool)
            .await?;
        Ok(wake.unwrap_or_default())
    }

    /// One call of `fetch_work_item`.
    pub(super) async fn fetch_work(
        s: &Store,
        params: &worker_queue::FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<Polled<FetchedItem>> {
        // The lease is counted once a connection is in hand.
        let conn = crate::observe::acquire(&s.pool, SqlMode::StoredProcedures).await?;
        claim.sent();
        let scan = s.floors.worker.start();
        let query = bind_fetch(
            sqlx::query(&s.sql.worker.fetch),
            params,
            clock,
            &scan,
            claim.token(),
        );
        let row = s.pool.fetch_optional_on(conn, query).await?;
        let Some(row) = row else {
            return Ok(Polled::Empty { next_due_ms: None });
        };
        s.floors.worker.set(scan, row.try_get("scan_floor_ms")?);
        work_claim(&row)
    }

    /// One call of `ack_work_item_and_claim`.
    pub(super) async fn ack_work_and_claim(
        s: &Store,
        ack: WorkAck<'_>,
        params: &worker_queue::FetchParams,
        clock: AttemptClock,
        claim: &Claiming<'_>,
    ) -> Result<(bool, Vec<String>, Option<Polled<FetchedItem>>)> {
        let conn = crate::observe::acquire(&s.pool, SqlMode::StoredProcedures).await?;
        claim.sent();
        let scan = s.floors.worker.start();
        let ack_query = sqlx::query(&s.sql.worker.ack_and_claim)
            .bind(ack.token)
            .bind(ack.instance)
            .bind(ack.kind)
            .bind(ack.json);
        let query = bind_fetch(ack_query, params, clock, &scan, claim.token());
        let row = s.pool.fetch_optional_on(conn, query).await?;
        let Some(row) = row else {
            return Ok((false, Vec::new(), None));
        };
        let acked: bool = row.try_get("acked")?;
        let wake: Vec<String> = row.try_get("wake")?;
        if !acked {
            return Ok((false, wake, None));
        }
        s.floors.worker.set(scan, row.try_get("scan_floor_ms")?);
        Ok((true, wake, Some(work_claim(&row)?)))
    }

    /// `query` with a worker fetch's parameters bound after what it has:
    /// `fetch_work_item`'s arguments, in order, the lease token `token`
    /// last.
    fn bind_fetch<'q>(
        query: Query<'q, Postgres, PgArguments>,
        params: &'q worker_queue::FetchParams,
        clock: AttemptClock,
        scan: &Scan,
        token: &'q str,
    ) -> Query<'q, Postgres, PgArguments> {
        query
            .bind(clock.lease_ms(params.lock_timeout))
            .bind(params.tag_mode)
            .bind(&params.tags)
            .bind(&params.owner)
            .bind(params.session_lock.map(|d| clock.lease_ms(d)))
            .bind(params.next_due)
            .bind(scan.floor)
            .bind(scan.next_floor_margin_ms())
            .bind(params.history_bytes)
            .bind(token)
    }

    /// The claim attempt in a row of `fetch_work_item`'s columns.
    fn work_claim(row: &sqlx::postgres::PgRow) -> Result<Polled<FetchedItem>> {
        Ok(match row.try_get::<Option<String>, _>("lock_token")? {
            None => Polled::Empty {
                next_due_ms: row.try_get("next_due_ms")?,
            },
            Some(token) => Polled::Found {
                item: (
                    token,
                    row.try_get("work_item")?,
                    row.try_get("attempt_count")?,
                    row.try_get("prefetched_history")?,
                ),
                more: row.try_get("more")?,
                next_due_ms: row.try_get("next_due_ms")?,
            },
        })
    }

    /// One call of `delete_instances`.
    pub(super) async fn delete_instances(
        s: &Store,
        ids: Vec<&str>,
        force: bool,
    ) -> Result<DeletedRow> {
        Ok(sqlx::query_as(&s.sql.deletion.delete)
            .bind(ids)
            .bind(force)
            .fetch_one(&s.pool.long_running())
            .await?)
    }

    /// One call of `delete_instance_bulk`.
    pub(super) async fn delete_instance_bulk(
        s: &Store,
        (ids, before, limit): FilterParams<'_>,
    ) -> Result<DeletedRow> {
        Ok(sqlx::query_as(&s.sql.deletion.delete_bulk)
            .bind(ids)
            .bind(before)
            .bind(limit)
            .fetch_one(&s.pool.long_running())
            .await?)
    }

    /// One call of `prune_executions`.
    pub(super) async fn prune_executions(
        s: &Store,
        instance_id: &str,
        (keep_last, completed_before): PruneParams,
    ) -> Result<PrunedRow> {
        Ok(sqlx::query_as(&s.sql.deletion.prune)
            .bind(instance_id)
            .bind(keep_last)
            .bind(completed_before)
            .fetch_one(&s.pool.long_running())
            .await?)
    }

    /// One call of `prune_executions_bulk`.
    pub(super) async fn prune_executions_bulk(
        s: &Store,
        (ids, before, limit): FilterParams<'_>,
        (keep_last, prune_before): PruneParams,
    ) -> Result<PrunedRow> {
        Ok(sqlx::query_as(&s.sql.deletion.prune_bulk)
            .bind(ids)
            .bind(before)
            .bind(limit)
            .bind(keep_last)
            .bind(prune_before)
            .fetch_one(&s.pool.long_running())
            .await?)
    }
}

/// The layering, checked on the source text: the facade is the only code
/// that knows `PostgresProvider`, and the operation modules leave the mode
/// to the driver.
#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    /// The facade's type, spelt so that this file does not name it.
    const PROVIDER: &str = concat!("Postgres", "Provider");

    /// The facade: the files allowed to name [`PROVIDER`] (`probe.rs` holds its
    /// hidden test hooks).
    const FACADE: &[&str] = &[
        "src/lib.rs",
        "src/provider.rs",
        "src/provider_admin.rs",
        "src/probe.rs",
    ];

    /// Modules that run operations: they name no mode to branch on.
    const OPERATIONS: &[&str] = &[
        "src/admin.rs",
        "src/deletion.rs",
        "src/history.rs",
        "src/observe.rs",
        "src/orchestration_queue.rs",
        "src/worker_queue.rs",
    ];

    /// Every `.rs` file under `dir`, as (path relative to the crate, text).
    fn sources(root: &Path, dir: &Path, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .flatten()
            .map(|e| e.path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                sources(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let name = path.strip_prefix(root).unwrap_or(&path);
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((name.to_string_lossy().replace('\\', "/"), text));
            }
        }
    }

    /// The library's sources (the command-line tool in `src/bin` is a client).
    fn library() -> Vec<(String, String)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        sources(root, &root.join("src"), &mut out);
        out.retain(|(name, _)| !name.starts_with("src/bin/"));
        assert!(out.len() > 20, "found {} sources", out.len());
        out
    }

    /// Lines of code (not comment lines) where `word` occurs as a whole word.
    fn uses(text: &str, word: &str) -> Vec<usize> {
        let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        let mut lines = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let whole = line.match_indices(word).any(|(at, _)| {
                let before = line[..at].chars().next_back();
                let after = line[at + word.len()..].chars().next();
                !before.is_some_and(ident) && !after.is_some_and(ident)
            });
            if whole {
                lines.push(n + 1);
            }
        }
        lines
    }

    #[test]
    fn nothing_below_the_facade_names_the_provider() {
        let mut found = Vec::new();
        let mut facade_uses = 0;
        for (name, text) in library() {
            let lines = uses(&text, PROVIDER);
            if FACADE.contains(&name.as_str()) {
                facade_uses += lines.len();
            } else {
                found.extend(lines.into_iter().map(|n| format!("{name}:{n}")));
            }
        }
        assert!(facade_uses > 0, "the scan found the facade's own uses");
        assert!(
            found.is_empty(),
            "{PROVIDER} named below the facade (take a `Store`): {found:?}"
        );
    }

    #[test]
    fn operation_modules_leave_the_mode_to_the_driver() {
        let library = library();
        for module in OPERATIONS {
            let (_, text) = library
                .iter()
                .find(|(name, _)| name == module)
                .unwrap_or_else(|| panic!("{module} not found: update OPERATIONS"));
            for word in ["StoredProcedures", "InlineSql", "Driver", PROVIDER] {
                let lines = uses(text, word);
                assert!(lines.is_empty(), "{module} names {word} at lines {lines:?}");
            }
        }
        // The scan itself: whole words, code lines only.
        assert_eq!(uses("x\nlet m = SqlMode::InlineSql;", "InlineSql"), [2]);
        assert!(uses("  // InlineSql in prose", "InlineSql").is_empty());
        assert!(uses("InlineSqlish", "InlineSql").is_empty());
        assert!(uses(&format!("{PROVIDER}Error"), PROVIDER).is_empty());
    }
}
