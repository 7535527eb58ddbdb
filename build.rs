//! Embeds the SQL files into the binary.
//!
//! Generates `$OUT_DIR/embedded_sql.rs` with sorted tables:
//!
//! * `MIGRATION_FILES`: `(name, text)` of every `migrations/*.sql`;
//! * `PROCEDURE_FILES`: `(name, text)` of every `procedures/*.sql`, its
//!   include markers already replaced by the statements of
//!   `statements/NAME/` or, for a marker `OTHER/STATEMENT`, of
//!   `statements/OTHER/` (see `src/statement_file.rs`), so what is installed,
//!   and checksummed, is the expanded text;
//! * `STATEMENT_FILES`: `(procedure, statement, text)` of every
//!   `statements/PROCEDURE/STATEMENT.sql`, which inline mode renders;
//! * `PROCEDURE_SOURCES` (tests only): the procedure files as written.
//!
//! Adding a `.sql` file is all it takes to ship a migration, a stored
//! procedure or a statement: no hand-maintained list to forget. An include
//! marker naming no statement fails the build.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

#[allow(dead_code)]
#[path = "src/statement_file.rs"]
mod statement_file;

/// `(file stem, absolute path)` of every `.sql` file in `dir`, sorted.
fn sql_files(dir: &Path) -> Vec<(String, String)> {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}/: {e}", dir.display()))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("non-UTF-8 file name in {}/", dir.display()))
                .to_string();
            let abs = fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (stem, abs.display().to_string())
        })
        .collect();
    files.sort();
    files
}

/// `(procedure, statement, absolute path)` of every statement file.
fn statement_files() -> Vec<(String, String, String)> {
    let root = Path::new("statements");
    println!("cargo:rerun-if-changed=statements");
    let mut dirs: Vec<String> = fs::read_dir(root)
        .unwrap_or_else(|e| panic!("cannot read statements/: {e}"))
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().is_dir())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .collect();
    dirs.sort();
    let mut all = Vec::new();
    for procedure in dirs {
        for (name, path) in sql_files(&root.join(&procedure)) {
            all.push((procedure.clone(), name, path));
        }
    }
    all
}

fn main() {
    let mut out = String::new();
    let migrations = sql_files(Path::new("migrations"));
    let procedures = sql_files(Path::new("procedures"));
    let statements = statement_files();
    let texts: Vec<(String, String, String)> = statements
        .iter()
        .map(|(procedure, name, path)| {
            let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
            (procedure.clone(), name.clone(), text)
        })
        .collect();
    for (procedure, _, _) in &statements {
        assert!(
            procedures.iter().any(|(name, _)| name == procedure),
            "statements/{procedure}/ belongs to no procedure"
        );
    }

    let _ = writeln!(
        out,
        "pub(crate) const MIGRATION_FILES: &[(&str, &str)] = &["
    );
    for (name, path) in &migrations {
        let _ = writeln!(out, "    ({name:?}, include_str!({path:?})),");
    }
    let _ = writeln!(out, "];");

    let _ = writeln!(
        out,
        "pub(crate) const PROCEDURE_FILES: &[(&str, &str)] = &["
    );
    for (name, path) in &procedures {
        let source = fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let lookup = |marker: &str| {
            let (procedure, statement) = statement_file::target(name, marker);
            texts
                .iter()
                .find(|(p, s, _)| p == procedure && s == statement)
                .map(|(_, _, text)| text.as_str())
        };
        let (expanded, _) = statement_file::expand(&source, lookup)
            .unwrap_or_else(|e| panic!("procedures/{name}.sql: {e}"));
        let _ = writeln!(out, "    ({name:?}, {expanded:?}),");
    }
    let _ = writeln!(out, "];");

    let _ = writeln!(
        out,
        "pub(crate) const STATEMENT_FILES: &[(&str, &str, &str)] = &["
    );
    for (procedure, name, path) in &statements {
        let _ = writeln!(
            out,
            "    ({procedure:?}, {name:?}, include_str!({path:?})),"
        );
    }
    let _ = writeln!(out, "];");

    let _ = writeln!(out, "#[cfg(test)]");
    let _ = writeln!(
        out,
        "pub(crate) const PROCEDURE_SOURCES: &[(&str, &str)] = &["
    );
    for (name, path) in &procedures {
        let _ = writeln!(out, "    ({name:?}, include_str!({path:?})),");
    }
    let _ = writeln!(out, "];");

    let dest =
        Path::new(&env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("embedded_sql.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
