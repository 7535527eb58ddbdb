//! SQL statements, rendered once per provider.
//!
//! Every operation module declares its statements with [`statements!`]: plain
//! SQL templates that name the tenant's schema through the `{{schema}}`
//! marker. [`Statements::render`] substitutes the quoted schema once, when the
//! provider is built; calls then bind parameters to ready strings, which sqlx
//! prepares once per connection and reuses. In inline mode a call of a
//! single-statement procedure renders as that statement (see [`crate::inline`]).

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, SqlSafeStr, SqlStr};

use crate::config::SqlMode;
use crate::schema::SchemaName;

/// A statement rendered from the crate's own SQL templates: its only
/// dynamic part is the tenant's schema name, validated and quoted
/// ([`SchemaName`]); values always travel as bind parameters. Shared, so
/// handing it to sqlx (which owns the text of every query it runs) copies
/// no text.
#[derive(Clone)]
pub(crate) struct Sql(Arc<str>);

impl Sql {
    /// Wraps a rendered statement.
    pub(crate) fn new(text: impl Into<Arc<str>>) -> Self {
        Self(text.into())
    }
}

impl Deref for Sql {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sql {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl SqlSafeStr for &Sql {
    fn into_sql_str(self) -> SqlStr {
        AssertSqlSafe(self.0.clone()).into_sql_str()
    }
}

/// Text built by the crate itself from its own templates, validated
/// identifiers (quoted) and constants, never from data: the statements
/// that are not rendered once per provider (DDL, admin and test helpers).
/// Copies the text, as sqlx owns the text of every query it runs.
pub(crate) fn audited(text: &str) -> AssertSqlSafe<String> {
    AssertSqlSafe(text.to_owned())
}

/// Declares a struct of rendered statements and its `render` constructor.
///
/// ```ignore
/// statements! {
///     /// Statements of the worker queue.
///     pub(crate) struct WorkerSql {
///         /// Claim the next work item.
///         fetch = "SELECT * FROM {{schema}}.fetch_work_item{{suffix}}($1, $2)",
///     }
/// }
/// ```
macro_rules! statements {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field:ident = $sql:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            $( $(#[$field_meta])* pub(crate) $field: $crate::sql::Sql, )*
        }

        impl $name {
            /// Renders every template for `schema` in `mode` (see
            /// [`crate::inline::render`]).
            pub(crate) fn render(
                schema: &$crate::schema::SchemaName,
                mode: $crate::config::SqlMode,
            ) -> Self {
                Self { $( $field: $crate::sql::Sql::new($crate::inline::render($sql, schema, mode)), )* }
            }

            /// `(field, template)` of every statement, for the unit tests.
            #[cfg(test)]
            pub(crate) const TEMPLATES: &'static [(&'static str, &'static str)] =
                &[$( (stringify!($field), $sql), )*];
        }
    };
}
pub(crate) use statements;

/// All statements of one provider, grouped by the module that runs them.
#[derive(Debug, Clone)]
pub(crate) struct Statements {
    /// Orchestrator queue: fetch, ack, abandon, renew, enqueue.
    pub orchestration: crate::orchestration_queue::OrchestrationSql,
    /// Worker queue and sessions.
    pub worker: crate::worker_queue::WorkerSql,
    /// History, KV, custom status and instance stats.
    pub history: crate::history::HistorySql,
    /// Management queries.
    pub admin: crate::admin::AdminSql,
    /// Deletion and pruning.
    pub deletion: crate::deletion::DeletionSql,
    /// Statements of the inline drivers (used in inline mode only).
    pub inline: crate::inline::InlineSql,
}

impl Statements {
    /// Renders every statement for `schema` in `mode`.
    pub(crate) fn render(schema: &SchemaName, mode: SqlMode) -> Self {
        Self {
            orchestration: crate::orchestration_queue::OrchestrationSql::render(schema, mode),
            worker: crate::worker_queue::WorkerSql::render(schema, mode),
            history: crate::history::HistorySql::render(schema, mode),
            admin: crate::admin::AdminSql::render(schema, mode),
            deletion: crate::deletion::DeletionSql::render(schema, mode),
            inline: crate::inline::InlineSql::render(schema),
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every call this build sends in procedure mode, as `group.field =
    /// template` lines, sorted.
    fn calls() -> String {
        let groups: [(&str, &[(&str, &str)]); 5] = [
            (
                "orchestration",
                crate::orchestration_queue::OrchestrationSql::TEMPLATES,
            ),
            ("worker", crate::worker_queue::WorkerSql::TEMPLATES),
            ("history", crate::history::HistorySql::TEMPLATES),
            ("admin", crate::admin::AdminSql::TEMPLATES),
            ("deletion", crate::deletion::DeletionSql::TEMPLATES),
        ];
        let mut lines: Vec<String> = groups
            .iter()
            .flat_map(|(group, templates)| {
                templates
                    .iter()
                    .map(move |(field, sql)| format!("{group}.{field} = {sql}"))
            })
            .collect();
        lines.sort();
        lines.join("\n") + "\n"
    }

    /// `tests/calls/current.sql` records every call this build sends, so a
    /// change of one shows in review, and so a release can keep its calls
    /// (as `tests/calls/previous.sql`) for the rolling-upgrade test
    /// (`upgrades::every_call_of_the_previous_build_still_parses`). With
    /// `UPDATE_CALLS=1` the test rewrites the file instead of failing.
    #[test]
    fn the_recorded_calls_are_this_builds() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/calls/current.sql");
        let want = calls();
        if std::env::var_os("UPDATE_CALLS").is_some() {
            std::fs::write(path, &want).expect("write tests/calls/current.sql");
            return;
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "tests/calls/current.sql differs from this build's calls; \
             run `UPDATE_CALLS=1 cargo test --lib sql::tests` and review the diff"
        );
    }
}
