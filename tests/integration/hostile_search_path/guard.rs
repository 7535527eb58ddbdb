//! The search_path rule, checked on the text: every built-in function the
//! crate's SQL calls is written `pg_catalog.f(...)`.
//!
//! The list of built-in names is read from the server's `pg_proc` at test
//! time, so a function added to a new PostgreSQL release is covered without
//! touching this file. Scanned: every `.sql` file build.rs embeds
//! (`migrations/`, `procedures/`, `statements/*/`), the migration and tenant SQL
//! (`migrate/`, `tenants/`), the listening connection's statements
//! (`notify/`), inline mode's own (`inline/`), and the SQL string literals of `src/` (the `statements!`
//! templates, the clock expression). A failure names the file and line of each unqualified call.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::support::pool;

/// Directories of embedded `.sql` files (`statements/` with its
/// subdirectories, one per procedure).
const SQL_DIRS: [&str; 7] = [
    "migrations",
    "procedures",
    "statements",
    "migrate",
    "tenants",
    "notify",
    "inline",
];

/// Words followed by `(` that are SQL syntax, not calls resolved through
/// `search_path`: keywords, type names with a modifier, and the special
/// forms the grammar itself qualifies (`extract`, `coalesce`, ...).
const NOT_CALLS: &[&str] = &[
    "all",
    "and",
    "any",
    "array",
    "as",
    "between",
    "bit",
    "case",
    "cast",
    "char",
    "character",
    "coalesce",
    "collation",
    "conflict",
    "current_date",
    "current_time",
    "current_timestamp",
    "dec",
    "decimal",
    "exists",
    "extract",
    "filter",
    "from",
    "greatest",
    "grouping",
    "in",
    "interval",
    "key",
    "lateral",
    "least",
    "localtime",
    "localtimestamp",
    "normalize",
    "not",
    "nullif",
    "numeric",
    "on",
    "or",
    "over",
    "overlaps",
    "overlay",
    "partition",
    "position",
    "references",
    "row",
    "rows",
    "returns",
    "select",
    "setof",
    "some",
    "substring",
    "table",
    "time",
    "timestamp",
    "treat",
    "trim",
    "unique",
    "using",
    "values",
    "varchar",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    "xmlelement",
];

/// One unqualified call: where and what.
struct Finding {
    file: String,
    line: usize,
    name: String,
    message: String,
}

/// `text` with every single-quoted literal, quoted identifier and `--`
/// comment blanked (newlines kept, so line numbers hold). Dollar-quoted
/// bodies stay: they are function bodies, SQL to check.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(' ');
                while let Some(d) = chars.next() {
                    if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            out.push_str("  ");
                            continue;
                        }
                        out.push(' ');
                        break;
                    }
                    out.push(if d == '\n' { '\n' } else { ' ' });
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The unqualified calls of built-ins (`builtins`, lower case) in `sql`,
/// whose first line is line `first_line` of `file`.
fn scan(file: &str, first_line: usize, sql: &str, builtins: &[String], out: &mut Vec<Finding>) {
    let code = code_only(sql);
    let bytes = code.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'$';
    let mut i = 0;
    while i < bytes.len() {
        if !(bytes[i].is_ascii_alphabetic() || bytes[i] == b'_') || (i > 0 && ident(bytes[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && ident(bytes[i]) {
            i += 1;
        }
        let name = code[start..i].to_ascii_lowercase();
        let mut j = i;
        while j < bytes.len() && bytes[j].is_ascii_whitespace() {
            j += 1;
        }
        if j >= bytes.len() || bytes[j] != b'(' {
            continue;
        }
        let before = code[..start].trim_end();
        let qualified = before.ends_with('.');
        // `unnest(a, b)` is FROM-clause grammar for `ROWS FROM (unnest(a),
        // unnest(b))`; qualified, it names a function that does not exist.
        if qualified && name == "unnest" && has_top_level_comma(&code[j..]) {
            out.push(Finding {
                file: file.to_string(),
                line: first_line + code[..start].matches('\n').count(),
                name: "unnest".to_string(),
                message: "multi-array unnest(a, b, ...) exists only unqualified: \
                          write ROWS FROM (pg_catalog.unnest(a), pg_catalog.unnest(b), ...)"
                    .to_string(),
            });
        }
        // `AS alias(col, ...)`: a column alias list, not a call.
        let aliased = before
            .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("as"));
        if !qualified
            && !aliased
            && !NOT_CALLS.contains(&name.as_str())
            && builtins.binary_search(&name).is_ok()
        {
            out.push(Finding {
                file: file.to_string(),
                line: first_line + code[..start].matches('\n').count(),
                message: format!("{name}(...) must be written pg_catalog.{name}(...)"),
                name,
            });
        }
    }
}

/// Whether the parenthesised list `text` starts with has a comma at its
/// own level (more than one argument).
fn has_top_level_comma(text: &str) -> bool {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return false;
                }
            }
            ',' if depth == 1 => return true,
            _ => {}
        }
    }
    false
}

/// The string literals of Rust source `text` that look like SQL, each with
/// the line it starts on.
fn sql_literals(text: &str) -> Vec<(usize, String)> {
    let looks_like_sql = |s: &str| {
        [
            "SELECT ", "INSERT ", "UPDATE ", "DELETE ", "CREATE ", "LISTEN ", "NOTIFY ", "SET ",
            "LOCK ", "WITH ", "extract(",
        ]
        .iter()
        .any(|k| s.contains(k))
    };
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Comments may quote SQL in prose; only literals count.
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'/') {
            while i < bytes.len() && bytes[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if bytes[i] == b'\'' {
            // A char literal (or a lifetime): skip `'x'` and `'\x'`.
            if bytes.get(i + 2) == Some(&b'\'') {
                i += 3;
                continue;
            }
            if bytes.get(i + 1) == Some(&b'\\')
                && let Some(end) = text[i + 2..].find('\'')
            {
                i += end + 3;
                continue;
            }
            i += 1;
            continue;
        }
        let raw = bytes[i] == b'r' && matches!(bytes.get(i + 1), Some(b'#') | Some(b'"'));
        if raw && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let hashes = text[i + 1..].chars().take_while(|c| *c == '#').count();
            let open = i + 1 + hashes;
            if bytes.get(open) == Some(&b'"') {
                let close = format!("\"{}", "#".repeat(hashes));
                if let Some(end) = text[open + 1..].find(&close) {
                    let body = &text[open + 1..open + 1 + end];
                    if looks_like_sql(body) {
                        out.push((text[..open].matches('\n').count() + 1, body.to_string()));
                    }
                    i = open + 1 + end + close.len();
                    continue;
                }
            }
        }
        if bytes[i] == b'"' {
            let mut j = i + 1;
            let mut body = String::new();
            while j < bytes.len() && bytes[j] != b'"' {
                if bytes[j] == b'\\' && j + 1 < bytes.len() {
                    // A line continuation keeps the SQL on one logical line.
                    if bytes[j + 1] == b'n' {
                        body.push('\n');
                    } else if bytes[j + 1] != b'\n' {
                        body.push(bytes[j + 1] as char);
                    } else {
                        body.push('\n');
                    }
                    j += 2;
                    continue;
                }
                body.push(bytes[j] as char);
                j += 1;
            }
            if looks_like_sql(&body) {
                out.push((text[..i].matches('\n').count() + 1, body));
            }
            i = j + 1;
            continue;
        }
        i += 1;
    }
    out
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every finding in the crate's SQL, pending files left out.
fn findings(builtins: &[String]) -> Vec<Finding> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let relative = |p: &Path| {
        p.strip_prefix(root)
            .unwrap_or(p)
            .to_string_lossy()
            .replace('\\', "/")
    };
    let mut found = Vec::new();
    for dir in SQL_DIRS {
        let mut files = Vec::new();
        sql_files(&root.join(dir), &mut files);
        files.sort();
        for path in files {
            let name = relative(&path);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
            scan(&name, 1, &text, builtins, &mut found);
        }
    }
    let mut sources = Vec::new();
    rust_files(&root.join("src"), &mut sources);
    sources.sort();
    for path in sources {
        let name = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (line, sql) in sql_literals(&text) {
            scan(&name, line, &sql, builtins, &mut found);
        }
    }
    found
}

fn report(found: &[Finding]) -> String {
    let mut text = String::new();
    for f in found {
        let _ = writeln!(text, "{}:{}: {}", f.file, f.line, f.message);
    }
    text
}

/// The built-in function names of the test server, sorted, lower case.
async fn builtins() -> Vec<String> {
    let pool = pool(1).await;
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT p.proname::text FROM pg_catalog.pg_proc p \
          WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace",
    )
    .fetch_all(&pool)
    .await
    .expect("read pg_proc");
    pool.close().await;
    for name in &mut names {
        *name = name.to_ascii_lowercase();
    }
    names.sort();
    names.dedup();
    names
}

#[tokio::test]
async fn every_builtin_the_crate_calls_is_qualified_with_pg_catalog() {
    let builtins = builtins().await;
    assert!(builtins.len() > 1000, "pg_proc read: {}", builtins.len());
    let found = findings(&builtins);
    assert!(
        found.is_empty(),
        "unqualified built-in calls (see the search_path rule in docs/architecture.md):\n{}",
        report(&found)
    );
}

#[tokio::test]
async fn the_guard_finds_unqualified_calls_and_names_their_line() {
    let builtins = builtins().await;
    let sql = "SELECT pg_catalog.count(*),\n  coalesce(max(x), 1), format('%s', y)\n\
               -- array_agg(z) in a comment\n  FROM {{schema}}.t AS u(a, b), 'unnest(q)';";
    let mut found = Vec::new();
    scan("procedures/x.sql", 10, sql, &builtins, &mut found);
    let got: Vec<(usize, &str)> = found.iter().map(|f| (f.line, f.name.as_str())).collect();
    assert_eq!(got, vec![(11, "max"), (11, "format")], "{}", report(&found));
    let mut found = Vec::new();
    scan(
        "procedures/y.sql",
        1,
        "SELECT * FROM pg_catalog.unnest(ARRAY[1, 2], b) AS u(x, y), pg_catalog.unnest(ARRAY[1, 2])",
        &builtins,
        &mut found,
    );
    assert_eq!(found.len(), 1, "{}", report(&found));
    assert!(found[0].message.contains("ROWS FROM"), "{}", report(&found));
    let rust = "const A: &str = \"SELECT now()\";\n// SELECT hashtext(x) in prose\n\
                const B: &str = r#\"\nWITH n AS (SELECT clock_timestamp())\"#;";
    let literals = sql_literals(rust);
    let mut found = Vec::new();
    for (line, sql) in &literals {
        scan("src/x.rs", *line, sql, &builtins, &mut found);
    }
    let got: Vec<(usize, &str)> = found.iter().map(|f| (f.line, f.name.as_str())).collect();
    assert_eq!(
        got,
        vec![(1, "now"), (4, "clock_timestamp")],
        "{}",
        report(&found)
    );
}

/// Every `.sql` file under `dir`, subdirectories included.
fn sql_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for path in entries.flatten().map(|e| e.path()) {
        if path.is_dir() {
            sql_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "sql") {
            out.push(path);
        }
    }
}
