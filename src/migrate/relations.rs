//! The tables and indexes a fully migrated schema holds, read from the
//! embedded migrations, and which of them a schema lacks: [`super::verify`]
//! refuses a schema whose table or index was dropped by hand (a missing
//! index turns every fetch into a scan of its queue; a missing table fails
//! every call that needs it), naming what is missing.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sqlx::{PgConnection, Row};

use super::{BOOKKEEPING, migrations};
use crate::error::{PostgresProviderError, Result};
use crate::schema::SchemaName;

const MISSING_RELATIONS: &str = include_str!("../../migrate/missing_relations.sql");

/// The names of the tables and indexes (named ones, primary keys and
/// `UNIQUE` columns' constraints) the bookkeeping and the migrations create,
/// in the order they appear.
pub(crate) fn expected() -> &'static [String] {
    static EXPECTED: OnceLock<Vec<String>> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let mut names = Vec::new();
        parse(BOOKKEEPING, &mut names);
        for migration in migrations() {
            parse(migration.sql, &mut names);
        }
        names
    })
}

/// Applies to `names` the relations `sql` creates and drops. Recognizes the
/// forms the migrations use: `CREATE TABLE [IF NOT EXISTS] {{schema}}.name (`
/// with one column or constraint per line, `PRIMARY KEY` on a column or as
/// a table constraint, `UNIQUE` on a column, `CREATE [UNIQUE] INDEX
/// [CONCURRENTLY] [IF NOT EXISTS] name` and `DROP INDEX [CONCURRENTLY] [IF
/// EXISTS] {{schema}}.name`. A form it misses fails
/// `migrations::the_expected_relations_are_exactly_a_migrated_schemas`.
fn parse(sql: &str, names: &mut Vec<String>) {
    let mut table: Option<String> = None;
    for line in sql.lines() {
        let line = line.split("--").next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["CREATE", "TABLE", rest @ ..] => {
                let name = rest
                    .iter()
                    .find(|w| w.starts_with("{{schema}}."))
                    .map(|w| w.trim_start_matches("{{schema}}.").trim_end_matches('('));
                if let Some(name) = name {
                    names.push(name.to_string());
                    table = Some(name.to_string());
                }
            }
            ["CREATE", "INDEX", rest @ ..] | ["CREATE", "UNIQUE", "INDEX", rest @ ..] => {
                let name = rest
                    .iter()
                    .find(|w| !matches!(**w, "CONCURRENTLY" | "IF" | "NOT" | "EXISTS"));
                if let Some(name) = name {
                    names.push((*name).to_string());
                }
            }
            ["DROP", "INDEX", rest @ ..] => {
                let name = rest
                    .iter()
                    .find(|w| !matches!(**w, "CONCURRENTLY" | "IF" | "EXISTS"))
                    .map(|w| w.trim_start_matches("{{schema}}.").trim_end_matches(';'));
                if let Some(name) = name {
                    names.retain(|n| n != name);
                }
            }
            [first, ..] if first.starts_with(')') => table = None,
            [column, ..] => {
                if let Some(table) = &table {
                    if line.contains("PRIMARY KEY") {
                        names.push(format!("{table}_pkey"));
                    } else if words.iter().any(|w| w.trim_end_matches(',') == "UNIQUE") {
                        names.push(format!("{table}_{column}_key"));
                    }
                }
            }
            [] => {}
        }
    }
}

/// For each of `schemas` that lacks any of [`expected`] (or holds one of
/// them as an invalid index), the names it lacks.
pub(crate) async fn missing(
    conn: &mut PgConnection,
    schemas: &[&SchemaName],
) -> Result<BTreeMap<String, Vec<String>>> {
    let names: Vec<&str> = schemas.iter().map(|s| s.as_str()).collect();
    let rows = sqlx::query(MISSING_RELATIONS)
        .bind(&names)
        .bind(expected())
        .fetch_all(conn)
        .await?;
    let mut missing: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for row in rows {
        let schema: String = row.try_get("schema_name")?;
        let relation: String = row.try_get("relation")?;
        let present: bool = row.try_get("present")?;
        let what = if present {
            format!("{relation} (invalid)")
        } else {
            relation
        };
        missing.entry(schema).or_default().push(what);
    }
    Ok(missing)
}

/// [`super::verify`]'s refusal of `schema`, which lacks `relations`.
pub(crate) fn lacks(schema: &SchemaName, relations: &[String]) -> PostgresProviderError {
    PostgresProviderError::SchemaNotReady {
        schema: schema.to_string(),
        reason: format!(
            "{} table(s) or index(es) missing or invalid: {} (recreate them from \
             `duroxide-postgres print-sql`)",
            relations.len(),
            relations.join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migrations_relations_are_read_with_their_implicit_indexes() {
        let all = expected();
        for name in [
            "_duroxide_migrations",
            "_duroxide_migrations_pkey",
            "_duroxide_procedures_pkey",
            "instances",
            "instances_pkey",
            "executions_pkey",
            "instance_locks_lock_token_key",
            "orchestrator_queue_visible_idx",
            "orchestrator_queue_orphan_idx",
            "worker_queue_session_idx",
            "sessions_locked_until_idx",
            "instance_claims",
            "instance_claims_pkey",
        ] {
            assert!(all.iter().any(|n| n == name), "{name} not in {all:?}");
        }
        assert!(
            !all.iter().any(|n| n == "orchestrator_queue_lock_idx"),
            "dropped by 0004: {all:?}"
        );
        let mut names = Vec::new();
        parse(
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS q_idx ON {{schema}}.q (a);\n\
             CREATE INDEX r_idx ON {{schema}}.q (b);",
            &mut names,
        );
        assert_eq!(names, ["q_idx", "r_idx"]);
        parse("DROP INDEX IF EXISTS {{schema}}.q_idx;", &mut names);
        assert_eq!(names, ["r_idx"]);
        let mut unique = all.to_vec();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), all.len(), "a name read twice: {all:?}");
    }
}
