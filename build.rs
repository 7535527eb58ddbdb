//! Embeds every file of `migrations/`, `procedures/` and `inline/` into the
//! binary.
//!
//! Generates `$OUT_DIR/embedded_sql.rs` with two sorted tables of
//! `(name, include_str!(file))`, so adding a `.sql` file is all it takes to ship
//! a migration, a stored procedure or its inline twin: no hand-maintained list
//! to forget.

use std::fmt::Write as _;
use std::path::Path;
use std::{env, fs};

fn sql_files(dir: &str) -> Vec<(String, String)> {
    println!("cargo:rerun-if-changed={dir}");
    let mut files: Vec<(String, String)> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {dir}/: {e}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .map(|path| {
            println!("cargo:rerun-if-changed={}", path.display());
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_else(|| panic!("non-UTF-8 file name in {dir}/"))
                .to_string();
            let abs = fs::canonicalize(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (stem, abs.display().to_string())
        })
        .collect();
    files.sort();
    files
}

fn main() {
    let mut out = String::new();
    for (table, dir) in [
        ("MIGRATION_FILES", "migrations"),
        ("PROCEDURE_FILES", "procedures"),
        ("INLINE_FILES", "inline"),
    ] {
        let _ = writeln!(out, "pub(crate) const {table}: &[(&str, &str)] = &[");
        for (name, path) in sql_files(dir) {
            let _ = writeln!(out, "    ({name:?}, include_str!({path:?})),");
        }
        let _ = writeln!(out, "];");
    }
    let dest =
        Path::new(&env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("embedded_sql.rs");
    fs::write(&dest, out).unwrap_or_else(|e| panic!("{}: {e}", dest.display()));
}
