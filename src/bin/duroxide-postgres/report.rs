//! What the command prints on stdout: a table per tenant for `status` and
//! `unreadable`, a line per tenant for `tenants list`.

use std::fmt::Write as _;
use std::time::Duration;

use duroxide_postgres::migrate::{self, SchemaStatus};
use duroxide_postgres::tenants::{CleanupHolder, QueueStats, TenantStatus, UnreadableItem};
use duroxide_postgres::{SchemaName, SqlMode};

/// `status`: one tenant as a two-column table.
pub fn status_table(tenant: &TenantStatus) -> String {
    let status = &tenant.status;
    let mut rows: Vec<(&str, String)> = vec![
        ("schema version", version(status)),
        ("pending migrations", status.pending_migrations.to_string()),
        ("procedures", procedures(status)),
        ("ready for", ready_for(tenant)),
    ];
    match &tenant.queues {
        Some(q) => {
            rows.push(("tables and indexes", relations(tenant)));
            rows.extend(queue_rows(q));
        }
        None => rows.push(("queues", "(not migrated yet)".to_string())),
    }
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = format!("tenant {}\n", tenant.schema);
    for (key, value) in rows {
        let _ = writeln!(out, "  {key:<width$}  {value}");
    }
    out
}

fn queue_rows(q: &QueueStats) -> Vec<(&'static str, String)> {
    vec![
        ("instances", q.instances.to_string()),
        (
            "orchestrator queue",
            format!(
                "{} message(s), {} visible, {} parked orphan(s)",
                q.orchestrator_messages, q.orchestrator_visible, q.parked_orphans
            ),
        ),
        (
            "worker queue",
            format!("{} item(s), {} visible", q.worker_items, q.worker_visible),
        ),
        (
            "oldest visible",
            format!(
                "{} (orchestrator {}, worker {})",
                age(q.oldest_visible()),
                age(q.orchestrator_oldest_visible),
                age(q.worker_oldest_visible)
            ),
        ),
        (
            "live leases",
            format!(
                "{} ({} instance turn(s), {} activity(ies))",
                q.live_leases(),
                q.live_instance_leases,
                q.live_activity_leases
            ),
        ),
        (
            "expired leases",
            format!(
                "{} ({} instance turn(s), {} activity(ies))",
                q.expired_leases(),
                q.expired_instance_leases,
                q.expired_activity_leases
            ),
        ),
    ]
}

/// A snapshot held this long is worth a warning: by then a busy tenant's
/// queues hold tens of thousands of rows no fetch can skip.
const HELD_TOO_LONG: Duration = Duration::from_secs(60);

/// `status`: the database's cleanup horizon, which every tenant shares.
pub fn horizon_block(holder: Option<&CleanupHolder>) -> String {
    let mut out = String::from("database\n");
    let Some(h) = holder else {
        out.push_str("  cleanup held back by  nothing\n");
        return out;
    };
    let details: Vec<String> = [
        h.role.as_ref().map(|r| format!("role {r}")),
        h.application.as_ref().map(|a| format!("application {a}")),
        h.state.clone(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut line = format!("{} {}", h.kind, h.holder);
    if !details.is_empty() {
        let _ = write!(line, " ({})", details.join(", "));
    }
    if let Some(held) = h.held_for {
        let _ = write!(line, " for {:.1}s", held.as_secs_f64());
    }
    let _ = write!(line, ", {} transaction(s) behind", h.transactions_behind);
    let _ = writeln!(out, "  cleanup held back by  {line}");
    if h.held_for.is_some_and(|held| held >= HELD_TOO_LONG) {
        out.push_str(
            "  warning               no tenant's delivered messages can be cleaned up while \
             it is held, so every fetch slows down (docs/operations.md, \"Long transactions\")\n",
        );
    }
    out
}

/// `tenants list`: the header line.
pub const LIST_HEADER: [&str; 4] = ["SCHEMA", "VERSION", "PENDING", "PROCEDURES"];

/// `tenants list`: one tenant's columns.
pub fn list_row(status: &SchemaStatus) -> [String; 3] {
    [
        status
            .applied_version
            .map_or_else(|| "-".to_string(), |v| v.to_string()),
        status.pending_migrations.to_string(),
        procedures(status),
    ]
}

/// `unreadable`: one tenant's items this build cannot decode, a line each.
pub fn unreadable_table(schema: &SchemaName, items: &[UnreadableItem]) -> String {
    if items.is_empty() {
        return format!("tenant {schema}: none\n");
    }
    let mut rows = vec![
        ["QUEUE", "ID", "INSTANCE", "ATTEMPTS", "LEASED", "ERROR"]
            .map(str::to_string)
            .to_vec(),
    ];
    for item in items {
        rows.push(vec![
            item.queue.to_string(),
            item.id.to_string(),
            item.instance_id.clone().unwrap_or_else(|| "-".to_string()),
            item.attempt_count.to_string(),
            if item.leased { "yes" } else { "no" }.to_string(),
            item.error.clone(),
        ]);
    }
    let mut out = format!("tenant {schema}: {} unreadable item(s)\n", items.len());
    for line in columns(&rows).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// Rows of columns, left-aligned to the widest cell of each column.
pub fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| format!("{cell:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
    }
    out
}

fn version(status: &SchemaStatus) -> String {
    let latest = migrate::latest_version();
    match status.applied_version {
        Some(v) => format!("{v} (this build: {latest})"),
        None => format!("none, not migrated (this build: {latest})"),
    }
}

fn procedures(status: &SchemaStatus) -> String {
    let total = migrate::procedures().len();
    let mut text = if status.stale_procedures == 0 {
        format!("installed ({total})")
    } else if status.stale_procedures == total {
        format!("missing ({total})")
    } else {
        format!("{} of {total} missing or stale", status.stale_procedures)
    };
    if status.retired_procedures > 0 {
        let _ = write!(text, ", {} retired", status.retired_procedures);
    }
    if status.legacy_procedures > 0 {
        let _ = write!(
            text,
            ", {} under legacy names (migrate --drop-legacy once no older build runs)",
            status.legacy_procedures
        );
    }
    text
}

fn ready_for(tenant: &TenantStatus) -> String {
    if !tenant.missing_relations.is_empty() {
        return "nothing: a table or index is missing".to_string();
    }
    let modes: Vec<&str> = [SqlMode::StoredProcedures, SqlMode::InlineSql]
        .into_iter()
        .filter(|m| tenant.status.is_ready_for(*m))
        .map(SqlMode::as_str)
        .collect();
    if modes.is_empty() {
        "nothing: run `duroxide-postgres migrate`".to_string()
    } else {
        modes.join(", ")
    }
}

/// The migrations' tables and indexes: all there, or those missing.
fn relations(tenant: &TenantStatus) -> String {
    if tenant.missing_relations.is_empty() {
        format!("all {} present", migrate::expected_relations().len())
    } else {
        format!(
            "missing or invalid: {} (`print-sql` has their DDL)",
            tenant.missing_relations.join(", ")
        )
    }
}

fn age(age: Option<Duration>) -> String {
    age.map_or_else(|| "-".to_string(), |d| format!("{:.1}s", d.as_secs_f64()))
}
