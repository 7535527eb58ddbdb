//! Statement files (`statements/PROCEDURE/NAME.sql`) and their two
//! renderings.
//!
//! A procedure with control flow is written as plpgsql around include
//! markers, `{{> NAME}}`, each standing for the statement in
//! `statements/PROCEDURE/NAME.sql`; `{{> OTHER/NAME}}` stands for another
//! procedure's statement, `statements/OTHER/NAME.sql` (a procedure that does
//! the work of two, such as `ack_work_item_and_claim`, runs theirs). The
//! same file is what inline mode sends for that step. A statement file is a
//! header of `--` comment lines, one of which may be
//! `-- params: name type, name type, ...`, then the statement.
//! The statement is written with the procedure's own parameter and variable
//! names; the header lists them in binding order with their types.
//!
//! * **Procedure rendering** ([`expand`], run by `build.rs`): the marker is
//!   replaced by the statement's text (the header left out, no trailing `;`),
//!   its lines after the first indented like the marker's line. Whatever
//!   surrounds the marker is the procedure's: `INTO` targets, `RETURN
//!   QUERY`, `FOR ... IN ... LOOP`, the closing `;`. A marker preceded by
//!   `PERFORM` takes a statement starting with `SELECT`, which `PERFORM`
//!   replaces (plpgsql's form of a query whose rows are discarded: every row
//!   is still read, and locked by a `FOR UPDATE`).
//! * **Inline rendering** (`crate::inline`): each parameter name becomes
//!   `$n::type`, `n` its place in the header.
//! * **Fragments** (`statements/PROCEDURE/_NAME.sql`): parts that statements
//!   of one step share, included by a statement with `{{> PROCEDURE/_NAME}}`
//!   and expanded the same way in both renderings ([`expand_fragments`] for
//!   inline mode), before the parameters are bound; they use the including
//!   statement's parameter names.
//!
//! This file is compiled twice: into the crate, and into `build.rs` (by
//! `#[path]`), which embeds every procedure already expanded, so the
//! checksum that decides a reinstall covers the statements it includes.

/// The header line that declares a statement's parameters.
pub const PARAMS_HEADER: &str = "-- params:";

/// Opens an include marker in a procedure file; `}}` closes it.
#[cfg_attr(not(test), allow(dead_code))] // build.rs and the unit tests
pub const INCLUDE_OPEN: &str = "{{> ";

/// The `(procedure, statement)` an include marker naming `name` stands for
/// in `procedure`'s file: `NAME` is the procedure's own statement,
/// `OTHER/NAME` another procedure's.
pub fn target<'a>(procedure: &'a str, name: &'a str) -> (&'a str, &'a str) {
    name.split_once('/').unwrap_or((procedure, name))
}

/// A statement file, taken apart.
#[derive(Debug)]
pub struct StatementFile<'a> {
    /// Parameters in binding order: (name, type).
    pub params: Vec<(&'a str, &'a str)>,
    /// The statement: no header, no trailing `;`.
    pub body: &'a str,
}

/// Parses a statement file's text.
pub fn parse(text: &str) -> Result<StatementFile<'_>, String> {
    let mut params = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        let line = rest[..end].trim();
        if !(line.is_empty() || line.starts_with("--")) {
            break;
        }
        if let Some(list) = line.strip_prefix(PARAMS_HEADER) {
            for param in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (name, ty) = param
                    .split_once(char::is_whitespace)
                    .ok_or_else(|| format!("parameter `{param}` has no type"))?;
                params.push((name.trim(), ty.trim()));
            }
        }
        rest = &rest[end..];
    }
    let body = rest.trim_end();
    let body = body.strip_suffix(';').unwrap_or(body).trim_end();
    if body.is_empty() {
        return Err("no statement after the header".to_string());
    }
    Ok(StatementFile { params, body })
}

/// Replaces every include marker of a procedure's `source` with the statement
/// `statement(name)` returns (the file's text); returns the expanded text and
/// the names included, in order (the fragments a statement includes not
/// among them: [`expand_fragments`]).
#[cfg_attr(not(test), allow(dead_code))] // build.rs and the unit tests
pub fn expand<'s>(
    source: &str,
    statement: impl Fn(&str) -> Option<&'s str>,
) -> Result<(String, Vec<String>), String> {
    expand_in(source, &statement, 0)
}

/// The prefix of a fragment's file name: `statements/PROCEDURE/_NAME.sql`
/// is no statement of its own but a part of statements, included by a
/// marker naming it with its procedure, `{{> PROCEDURE/_NAME}}` (wherever
/// the including statement is expanded), so that the statements of one
/// step that differ by a branch share the rest (the worker fetch's
/// candidates, one per kind of tag filter).
pub const FRAGMENT_PREFIX: &str = "_";

/// How deep includes may nest: a procedure, its statements, their
/// fragments.
const MAX_DEPTH: usize = 2;

/// A statement's `body` with its fragment markers replaced by the fragments
/// `fragment(name)` returns, as [`expand`] replaces a procedure's markers:
/// what inline mode sends, before its parameters become placeholders.
pub fn expand_fragments<'s>(
    body: &str,
    fragment: impl Fn(&str) -> Option<&'s str>,
) -> Result<String, String> {
    expand_in(body, &fragment, 1).map(|(text, _)| text)
}

fn expand_in<'s>(
    source: &str,
    statement: &impl Fn(&str) -> Option<&'s str>,
    depth: usize,
) -> Result<(String, Vec<String>), String> {
    let mut out = String::with_capacity(source.len() * 2);
    let mut used = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(INCLUDE_OPEN) {
        let before = &rest[..at];
        let after = &rest[at + INCLUDE_OPEN.len()..];
        let close = after
            .find("}}")
            .ok_or_else(|| "an include marker is not closed".to_string())?;
        let name = after[..close].trim();
        let fragment = name
            .rsplit('/')
            .next()
            .is_some_and(|file| file.starts_with(FRAGMENT_PREFIX));
        if depth > 0 && !(fragment && name.contains('/')) {
            return Err(format!(
                "a statement includes `{name}`: only fragments, named with their procedure (`PROCEDURE/{FRAGMENT_PREFIX}NAME`)"
            ));
        }
        if depth == 0 && fragment {
            return Err(format!(
                "a procedure includes the fragment `{name}`: only statements"
            ));
        }
        if depth > MAX_DEPTH {
            return Err(format!("includes nested too deep at `{name}`"));
        }
        let text = statement(name).ok_or_else(|| format!("no statement `{name}`"))?;
        let file = parse(text).map_err(|e| format!("statement `{name}`: {e}"))?;
        let line = &before[before.rfind('\n').map_or(0, |i| i + 1)..];
        let indent = &line[..line.len() - line.trim_start().len()];
        let (expanded, _) = expand_in(file.body, statement, depth + 1)?;
        let mut body = expanded.as_str();
        if line.trim_end().ends_with("PERFORM") {
            body = body
                .strip_prefix("SELECT")
                .ok_or_else(|| format!("PERFORM of `{name}`, which does not start with SELECT"))?
                .trim_start();
        }
        out.push_str(before);
        for (i, body_line) in body.lines().enumerate() {
            if i > 0 {
                out.push('\n');
                if !body_line.is_empty() {
                    out.push_str(indent);
                }
            }
            out.push_str(body_line);
        }
        used.push(name.to_string());
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok((out, used))
}
