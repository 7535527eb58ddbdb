//! The migrations and procedures this build embeds: their files, versions
//! and checksums, and the crate version procedure records carry.

use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::embedded::{MIGRATION_FILES, PROCEDURE_FILES};
use crate::schema::{NOW_MS_MARKER, NOW_MS_SQL, SUFFIX_MARKER};

/// One embedded migration file.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Version parsed from the file name's numeric prefix.
    pub version: i64,
    /// The file name without extension, e.g. `0001_initial`.
    pub name: &'static str,
    pub(super) sql: &'static str,
    pub(super) checksum: [u8; 32],
}

/// One embedded stored-procedure file.
#[derive(Debug, Clone)]
pub struct Procedure {
    /// The function's name, which is also the file name.
    pub name: &'static str,
    pub(super) sql: &'static str,
    pub(super) checksum: [u8; 32],
}

impl Migration {
    /// The file's SQL template (`{{schema}}` not yet substituted).
    pub(crate) fn template(&self) -> &'static str {
        self.sql
    }

    /// The tables the migration creates, read from its `CREATE TABLE`
    /// statements.
    pub(crate) fn created_tables(&self) -> Vec<String> {
        tables_created_by(self.sql)
    }

    /// SHA-256 of the template, in hex, as `_duroxide_migrations` records it.
    pub(crate) fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }
}

impl Procedure {
    /// The file's SQL template (`{{schema}}` not yet substituted).
    pub(crate) fn template(&self) -> &'static str {
        self.sql
    }

    /// SHA-256 of the template, in hex, as `_duroxide_procedures` records it.
    pub(crate) fn checksum_hex(&self) -> String {
        hex(&self.checksum)
    }

    /// The function as `GRANT` and `REVOKE` name it: `{{schema}}.` and the
    /// name with `{{suffix}}`, then the argument list as the file declares
    /// it (names and types; comments and defaults left out). `None` when the
    /// file's `CREATE ... FUNCTION` header is not of that form.
    pub(crate) fn signature(&self) -> Option<String> {
        let head = format!("FUNCTION {{{{schema}}}}.{}{SUFFIX_MARKER}(", self.name);
        let start = self.sql.find(&head)? + head.len();
        let arguments = &self.sql[start..];
        let arguments = &arguments[..arguments.find(')')?];
        if arguments.contains('(') || arguments.contains('\'') {
            return None;
        }
        let arguments = arguments
            .lines()
            .map(|line| line.split("--").next().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" ");
        let arguments = arguments
            .split(',')
            .map(|argument| {
                let words: Vec<&str> = argument
                    .split_whitespace()
                    .take_while(|w| !w.eq_ignore_ascii_case("DEFAULT"))
                    .collect();
                words.join(" ")
            })
            .collect::<Vec<_>>()
            .join(", ");
        Some(format!(
            "{{{{schema}}}}.{}{SUFFIX_MARKER}({arguments})",
            self.name
        ))
    }

    /// SHA-256 of the template, for the unit tests.
    #[cfg(test)]
    pub(crate) fn checksum(&self) -> [u8; 32] {
        self.checksum
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The migrations embedded in this build, in version order.
pub fn migrations() -> Vec<Migration> {
    // Hashed once per process: a status of thousands of tenants asks for
    // them several times per tenant.
    static MIGRATIONS: OnceLock<Vec<Migration>> = OnceLock::new();
    MIGRATIONS
        .get_or_init(|| {
            MIGRATION_FILES
                .iter()
                .map(|(name, sql)| {
                    let digits: String = name.chars().take_while(|c| c.is_ascii_digit()).collect();
                    Migration {
                        // build.rs only embeds files; a malformed name fails the unit test below.
                        version: digits.parse().unwrap_or(0),
                        name,
                        sql,
                        checksum: sha256(sql),
                    }
                })
                .collect()
        })
        .clone()
}

/// The stored procedures embedded in this build, in name order.
pub fn procedures() -> Vec<Procedure> {
    // Hashed once per process, as the migrations.
    static PROCEDURES: OnceLock<Vec<Procedure>> = OnceLock::new();
    PROCEDURES
        .get_or_init(|| {
            PROCEDURE_FILES
                .iter()
                .map(|(name, sql)| Procedure {
                    name,
                    sql,
                    checksum: procedure_checksum(sql),
                })
                .collect()
        })
        .clone()
}

/// The checksum of a procedure's text as installed: the statements it
/// includes already expanded (build.rs) and the clock expression rendered,
/// so a change to an included statement or to NOW_MS_SQL (say, qualifying
/// it) reinstalls every procedure using it, not only those whose file
/// changed.
pub(crate) fn procedure_checksum(sql: &str) -> [u8; 32] {
    sha256(&sql.replace(NOW_MS_MARKER, NOW_MS_SQL))
}

/// The version of this crate, as procedure records carry it.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `MAJOR.MINOR.PATCH` of a version string (pre-release and build metadata
/// ignored); `None` when it is not one.
pub(super) fn version_triple(version: &str) -> Option<(u64, u64, u64)> {
    let core = version.trim().split(['-', '+']).next()?;
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    let triple = (parts.next()??, parts.next()??, parts.next()??);
    parts.next().is_none().then_some(triple)
}

/// Whether procedures recorded with `recorded` come from a newer build than
/// this one. A version this build cannot read counts as newer: it is left
/// alone rather than fought over.
pub(crate) fn is_newer(recorded: &str) -> bool {
    match (version_triple(recorded), version_triple(CRATE_VERSION)) {
        (Some(theirs), Some(ours)) => theirs > ours,
        _ => recorded.trim() != CRATE_VERSION,
    }
}

/// Highest migration version embedded in this build.
pub fn latest_version() -> i64 {
    migrations().last().map_or(0, |m| m.version)
}

/// The tables `template` creates, in order, each once: the names after its
/// `CREATE TABLE {{schema}}.` (or `CREATE TABLE IF NOT EXISTS`) statements.
pub(crate) fn tables_created_by(template: &str) -> Vec<String> {
    const PREFIXES: [&str; 2] = [
        "CREATE TABLE {{schema}}.",
        "CREATE TABLE IF NOT EXISTS {{schema}}.",
    ];
    let mut found: Vec<(usize, String)> = Vec::new();
    for prefix in PREFIXES {
        for (at, _) in template.match_indices(prefix) {
            let name: String = template[at + prefix.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && found.iter().all(|(_, n)| *n != name) {
                found.push((at, name));
            }
        }
    }
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}
