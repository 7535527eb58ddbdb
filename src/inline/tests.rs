//! Structure tests: one source per statement.

use std::collections::BTreeSet;

use super::*;
use crate::embedded::PROCEDURE_SOURCES;
use crate::migrate::{procedure_checksum, procedures};
use crate::statement_file::{INCLUDE_OPEN, expand, target};

/// Procedures that have control flow, and so statement files and a driver.
const DRIVEN: &[&str] = &[
    "ack_orchestration_item",
    "delete_instance_bulk",
    "delete_instances",
    "fetch_orchestration_item",
    "fetch_work_item",
    "get_system_metrics",
    "prune_executions",
    "prune_executions_bulk",
];

/// Procedures with no statement of their own, so no statement files: they
/// run other procedures' statements (`ack_work_item_and_claim`, whose
/// inline driver runs the same statements, `crate::driver`) or call other
/// procedures (`warm_up`, which has no inline counterpart, inline mode
/// having no procedures to warm: `crate::warm_up`).
const COMPOSED: &[&str] = &["ack_work_item_and_claim", "warm_up"];

/// Single-statement procedures whose statement is a statement file, because
/// a composed procedure runs it too. Inline mode derives their statement
/// from the expanded procedure, which is the file's.
const SHARED: &[&str] = &["ack_work_item"];

/// `(procedure, statement)` of every statement an inline driver runs.
fn driver_statements() -> BTreeSet<(&'static str, &'static str)> {
    let mut all: Vec<&[(&str, &str)]> = vec![
        orchestration::FetchSql::STATEMENTS,
        orchestration::AckSql::STATEMENTS,
        worker::FetchSql::STATEMENTS,
        metrics::MetricsSql::STATEMENTS,
    ];
    all.extend(deletion::DeletionSql::STATEMENTS);
    let mut run: BTreeSet<_> = all.into_iter().flatten().copied().collect();
    // Derived: inline mode sends the procedure's single statement.
    run.extend(
        STATEMENT_FILES
            .iter()
            .filter(|(p, _, _)| SHARED.contains(p))
            .map(|(p, n, _)| (*p, *n)),
    );
    run
}

/// Every statement file but the fragments, which statements include.
fn statement_files() -> BTreeSet<(&'static str, &'static str)> {
    STATEMENT_FILES
        .iter()
        .filter(|(_, n, _)| !n.starts_with(crate::statement_file::FRAGMENT_PREFIX))
        .map(|(p, n, _)| (*p, *n))
        .collect()
}

#[test]
fn every_fragment_is_part_of_a_statement_in_both_modes() {
    for (procedure, name, _) in STATEMENT_FILES
        .iter()
        .filter(|(_, n, _)| n.starts_with(crate::statement_file::FRAGMENT_PREFIX))
    {
        let marker = format!("{{{{> {procedure}/{name}}}}}");
        let including: Vec<_> = STATEMENT_FILES
            .iter()
            .filter(|(_, _, text)| text.contains(&marker))
            .collect();
        assert!(
            !including.is_empty(),
            "{procedure}/{name}: included by no statement"
        );
        for (p, n, _) in including {
            // Inline mode sends it expanded, as the procedure installs it.
            let inline = statement(p, n);
            assert!(
                !inline.is_empty() && !inline.contains("{{> "),
                "{p}/{n}: {inline}"
            );
        }
    }
    for (name, text) in PROCEDURE_FILES {
        assert!(!text.contains("{{> "), "{name}: a marker left unexpanded");
    }
}

fn source(procedure: &str) -> &'static str {
    PROCEDURE_SOURCES
        .iter()
        .find(|(n, _)| *n == procedure)
        .map(|(_, text)| *text)
        .unwrap_or_else(|| panic!("no procedures/{procedure}.sql"))
}

fn statement_text(procedure: &str, name: &str) -> Option<&'static str> {
    STATEMENT_FILES
        .iter()
        .find(|(p, n, _)| *p == procedure && *n == name)
        .map(|(_, _, text)| *text)
}

/// `procedure`'s source expanded as `build.rs` does, except that
/// `replace(procedure, statement)` may give a statement another text:
/// (text, markers included).
fn expanded_with(
    procedure: &str,
    replace: impl Fn(&str, &str) -> Option<String>,
) -> (String, Vec<String>) {
    let texts: Vec<(String, String)> = STATEMENT_FILES
        .iter()
        .map(|(p, n, text)| {
            let text = replace(p, n).unwrap_or_else(|| (*text).to_string());
            (format!("{p}/{n}"), text)
        })
        .collect();
    let lookup = |marker: &str| {
        let (p, n) = target(procedure, marker);
        let key = format!("{p}/{n}");
        texts
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, text)| text.as_str())
    };
    expand(source(procedure), lookup).unwrap_or_else(|e| panic!("{procedure}: {e}"))
}

/// `procedure`'s source expanded as `build.rs` does.
fn expanded(procedure: &str) -> (String, Vec<String>) {
    expanded_with(procedure, |_, _| None)
}

#[test]
fn every_procedure_is_derived_or_has_statement_files() {
    for (name, text) in PROCEDURE_FILES {
        let sig = parse(name, text).unwrap_or_else(|| panic!("{name}.sql does not parse"));
        let derivable = single_statement(&sig).is_some();
        let statements = STATEMENT_FILES.iter().any(|(p, _, _)| p == name);
        if COMPOSED.contains(name) {
            assert!(
                !derivable && !statements,
                "{name}: composed, yet {derivable}/{statements}"
            );
            continue;
        }
        if SHARED.contains(name) {
            let (_, used) = expanded(name);
            assert!(
                derivable && used.len() == 1,
                "{name}: shared, yet derivable={derivable}, includes {used:?}"
            );
            // The same statement; the procedure's copy is indented.
            let lines = |text: String| {
                text.lines()
                    .map(|l| l.trim().to_string())
                    .collect::<Vec<_>>()
            };
            assert_eq!(
                lines(derived(name).unwrap_or_default()),
                lines(statement(name, &used[0])),
                "{name}"
            );
            continue;
        }
        assert!(
            derivable != statements,
            "{name}: derivable={derivable}, statement files={statements}; exactly one must hold"
        );
        assert_eq!(statements, DRIVEN.contains(name), "{name}: update DRIVEN");
    }
}

#[test]
fn the_drivers_run_exactly_the_statement_files() {
    let files = statement_files();
    let drivers = driver_statements();
    let unused: Vec<_> = files.difference(&drivers).collect();
    let missing: Vec<_> = drivers.difference(&files).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "statement files no driver runs: {unused:?}; driver statements without a file: {missing:?}"
    );
    for (procedure, name) in drivers {
        assert!(
            !statement(procedure, name).is_empty(),
            "statements/{procedure}/{name}.sql is missing or does not parse"
        );
    }
}

#[test]
fn every_statement_file_is_included_by_its_procedure() {
    for procedure in DRIVEN.iter().chain(SHARED) {
        let (_, used) = expanded(procedure);
        let used: BTreeSet<&str> = used
            .iter()
            .filter(|marker| !marker.contains('/'))
            .map(String::as_str)
            .collect();
        let files: BTreeSet<&str> = statement_files()
            .into_iter()
            .filter(|(p, _)| p == procedure)
            .map(|(_, n)| n)
            .collect();
        assert_eq!(
            used, files,
            "{procedure}: the statements its source includes and its statement files differ"
        );
    }
}

#[test]
fn procedures_are_embedded_expanded() {
    for (name, text) in PROCEDURE_FILES {
        let (expanded, _) = expanded(name);
        assert_eq!(*text, expanded, "{name}");
        assert!(!text.contains(INCLUDE_OPEN), "{name}: marker left");
    }
}

/// `text` with `--` comments, string literals and include markers removed.
fn outside_statements(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let line = line.split("--").next().unwrap_or_default();
        let line: String = line.split('\'').step_by(2).collect();
        let mut rest = line.as_str();
        while let Some(at) = rest.find(INCLUDE_OPEN) {
            out.push_str(&rest[..at]);
            rest = rest[at..].split_once("}}").map_or("", |(_, r)| r);
        }
        out.push_str(rest);
        out.push('\n');
    }
    out
}

#[test]
fn procedure_sources_touch_tables_only_through_their_statements() {
    let procedures: Vec<&str> = PROCEDURE_FILES.iter().map(|(n, _)| *n).collect();
    for name in DRIVEN.iter().chain(COMPOSED) {
        let text = outside_statements(source(name));
        let body = &text[text.find("AS $$").unwrap_or_else(|| panic!("{name}"))..];
        let words: Vec<String> = body
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map(str::to_ascii_uppercase)
            .collect();
        for dml in ["INSERT", "UPDATE", "DELETE", "MERGE"] {
            assert!(
                !words.iter().any(|w| w == dml),
                "{name}: `{dml}` outside an included statement"
            );
        }
        // Outside its statements a procedure names no table; it may call
        // another procedure (the bulk deletes do).
        for (at, _) in body.match_indices("{{schema}}.") {
            let called = &body[at + "{{schema}}.".len()..];
            let called = &called[..called.find('(').unwrap_or(0)];
            let called = called
                .strip_suffix(crate::schema::SUFFIX_MARKER)
                .unwrap_or(called);
            assert!(
                procedures.contains(&called),
                "{name}: `{{{{schema}}}}.{called}` outside an included statement"
            );
        }
    }
}

#[test]
fn a_changed_statement_changes_its_procedures_checksum() {
    let installed = procedures();
    let mut checked = BTreeSet::new();
    for (procedure, _) in PROCEDURE_FILES {
        let embedded = installed
            .iter()
            .find(|p| p.name == *procedure)
            .unwrap_or_else(|| panic!("{procedure}"));
        let (current, used) = expanded(procedure);
        assert_eq!(
            procedure_checksum(&current),
            embedded.checksum(),
            "{procedure}: the installed checksum is not the expanded text's"
        );
        for marker in used {
            let (owner, name) = target(procedure, &marker);
            let (changed, _) = expanded_with(procedure, |p, n| {
                (p == owner && n == name)
                    .then(|| statement_text(p, n).map(|t| format!("{t}\n-- changed")))
                    .flatten()
            });
            assert_ne!(
                procedure_checksum(&changed),
                embedded.checksum(),
                "{procedure}: changing {owner}/{name}.sql leaves its checksum"
            );
            checked.insert((owner.to_string(), name.to_string()));
        }
    }
    // A fragment changes the checksum of the procedures whose statements
    // include it.
    for (owner, name, _) in STATEMENT_FILES
        .iter()
        .filter(|(_, n, _)| n.starts_with(crate::statement_file::FRAGMENT_PREFIX))
    {
        for (procedure, _) in PROCEDURE_FILES {
            let (changed, _) = expanded_with(procedure, |p, n| {
                (p == *owner && n == *name)
                    .then(|| statement_text(p, n).map(|t| format!("{t}\n-- changed")))
                    .flatten()
            });
            let embedded = installed
                .iter()
                .find(|p| p.name == *procedure)
                .unwrap_or_else(|| panic!("{procedure}"));
            if procedure_checksum(&changed) != embedded.checksum() {
                checked.insert((owner.to_string(), name.to_string()));
            }
        }
    }
    for (procedure, name, _) in STATEMENT_FILES {
        assert!(
            checked.contains(&(procedure.to_string(), name.to_string())),
            "{procedure}/{name}.sql is included by no procedure"
        );
    }
}

/// The tokens of `text` between `from` and `to`, comments left out.
fn tokens_between<'t>(text: &'t str, from: &str, to: &str) -> Vec<&'t str> {
    let start = text.find(from).map_or(0, |i| i + from.len());
    let end = text[start..].find(to).map_or(text.len(), |i| start + i);
    text[start..end]
        .lines()
        .map(|line| line.split("--").next().unwrap_or_default())
        .flat_map(str::split_whitespace)
        .collect()
}

#[test]
fn the_composed_claim_runs_fetch_work_items_loop() {
    let fetch = source("fetch_work_item");
    let composed = source("ack_work_item_and_claim");
    // fetch_work_item returns from inside its loop; the composed procedure
    // leaves the loop instead (it has the ack's setting to put back after
    // it), with `more` false from the start.
    let fetch_loop = tokens_between(fetch, "FOR v_try IN 1..8 LOOP", "END LOOP;")
        .join(" ")
        .replace("more := false; RETURN NEXT; RETURN;", "EXIT;")
        .replace("RETURN NEXT; RETURN;", "EXIT;");
    let composed_loop = tokens_between(composed, "FOR v_try IN 1..8 LOOP", "END LOOP;")
        .join(" ")
        .replace("{{> fetch_work_item/", "{{> ");
    assert_eq!(composed_loop, fetch_loop);
    // Every variable of the fetch is declared the same way.
    let composed_declared = tokens_between(composed, "DECLARE", "BEGIN").join(" ");
    for declaration in tokens_between(fetch, "DECLARE", "BEGIN")
        .join(" ")
        .split_inclusive(';')
    {
        assert!(
            composed_declared.contains(declaration.trim()),
            "ack_work_item_and_claim does not declare `{declaration}`"
        );
    }
}

#[test]
fn inline_statements_keep_no_parameter_name() {
    // Fragments are checked as part of the statements that include them,
    // whose headers declare what they use.
    for (procedure, name, text) in STATEMENT_FILES
        .iter()
        .filter(|(_, n, _)| !n.starts_with(crate::statement_file::FRAGMENT_PREFIX))
    {
        let file = crate::statement_file::parse(text)
            .unwrap_or_else(|e| panic!("{procedure}/{name}: {e}"));
        let inline = statement(procedure, name);
        for word in inline.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            assert!(
                !file.params.iter().any(|(p, _)| *p == word),
                "{procedure}/{name}: {word} left in the inline statement"
            );
            assert!(
                !(word.starts_with("v_") || word.starts_with("p_")),
                "{procedure}/{name}: `{word}` is not declared in its params header"
            );
        }
    }
}

#[test]
fn expansion_indents_and_performs() {
    let statement = "-- A test.\n-- params: p_a text\nSELECT x\n  FROM t\n\n WHERE y = p_a;\n";
    let lookup = |name: &str| (name == "s").then_some(statement);
    let (text, used) = expand(
        "BEGIN\n    PERFORM {{> s}};\n    {{> s}} INTO v;\nEND",
        lookup,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(used, ["s", "s"]);
    assert_eq!(
        text,
        "BEGIN\n    PERFORM x\n      FROM t\n\n     WHERE y = p_a;\n    SELECT x\n      FROM t\n\n     WHERE y = p_a INTO v;\nEND"
    );
    assert!(expand("{{> nothing}}", lookup).is_err());
}

#[test]
fn fragments_expand_inside_statements_and_nowhere_else() {
    let statement = "-- params: p_a text\nSELECT x\n  FROM t\n WHERE {{> p/_f}}\n   AND z;\n";
    let fragment = "-- A part.\n(y = p_a\n OR w)\n";
    let lookup = |name: &str| match name {
        "s" => Some(statement),
        "p/_f" | "_f" => Some(fragment),
        "bad" => Some("SELECT {{> s}}"),
        _ => None,
    };
    let (text, used) =
        expand("BEGIN\n    {{> s}} INTO v;\nEND", lookup).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(used, ["s"]);
    assert_eq!(
        text,
        "BEGIN\n    SELECT x\n      FROM t\n     WHERE (y = p_a\n      OR w)\n       AND z INTO v;\nEND"
    );
    let inline = crate::statement_file::expand_fragments("SELECT 1 WHERE {{> p/_f}}", lookup);
    assert_eq!(inline.as_deref(), Ok("SELECT 1 WHERE (y = p_a\n OR w)"));
    // A procedure includes statements only; a statement, fragments named
    // with their procedure only.
    assert!(expand("{{> _f}}", lookup).is_err());
    assert!(expand("{{> p/_f}}", lookup).is_err());
    assert!(expand("{{> bad}}", lookup).is_err());
    assert!(crate::statement_file::expand_fragments("{{> _f}}", lookup).is_err());
}

#[test]
fn comments_are_copied_untouched() {
    let bound = bind_parameters(
        "SELECT p_a -- the token's p_a\n  FROM t WHERE x = p_a",
        &[("p_a", "text")],
    );
    assert_eq!(
        bound,
        "SELECT $1::text -- the token's p_a\n  FROM t WHERE x = $1::text"
    );
}

#[test]
fn parameters_become_typed_placeholders() {
    let params = [("p_id", "text"), ("p_ids", "text[]")];
    assert_eq!(
        bind_parameters(
            "SELECT t.p_id, p_id FROM x WHERE y = ANY (p_ids) AND z = 'p_id'",
            &params
        ),
        "SELECT t.p_id, $1::text FROM x WHERE y = ANY ($2::text[]) AND z = 'p_id'"
    );
}

#[test]
fn derived_statements_reference_no_procedure_and_no_parameter_name() {
    for (name, text) in PROCEDURE_FILES {
        let Some(statement) = derived(name) else {
            continue;
        };
        let sig = parse(name, text).unwrap_or_else(|| panic!("{name}"));
        for (param, _) in &sig.params {
            assert!(
                !statement.contains(param),
                "{name}: {param} left in {statement}"
            );
        }
        for (other, _) in PROCEDURE_FILES {
            assert!(
                !statement.contains(&format!("{{{{schema}}}}.{other}(")),
                "{name} calls {other}"
            );
        }
    }
}

#[test]
fn a_defaulted_parameter_binds_by_its_type() {
    let text = "CREATE OR REPLACE FUNCTION {{schema}}.f{{suffix}}(\n    p_a text,\n    p_b boolean DEFAULT false)\nRETURNS TABLE (x text)\nLANGUAGE plpgsql\nAS $$\nBEGIN\nRETURN QUERY SELECT p_a WHERE p_b;\nEND\n$$;";
    let sig = parse("f", text).unwrap_or_else(|| panic!("does not parse"));
    assert_eq!(sig.params, [("p_a", "text"), ("p_b", "boolean")]);
    let read = derived("read_history").unwrap_or_default();
    assert!(
        read.contains("$3::boolean") && !read.contains("DEFAULT"),
        "{read}"
    );
}

/// Every procedure of more than one statement is written for READ
/// COMMITTED (each statement sees what committed before it began) and
/// refuses a stricter level before it does anything (SQLSTATE `DX006`,
/// which the provider answers by calling again in a READ COMMITTED
/// transaction). Exempt: `get_system_metrics`, which only reads (one
/// snapshot for all its statements serves it as well), and `warm_up`, whose
/// calls of the others meet their checks and which rolls back anyway.
#[test]
fn every_procedure_of_more_than_one_statement_refuses_a_stricter_isolation() {
    const GUARD: &str =
        "IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN";
    for name in DRIVEN.iter().chain(COMPOSED) {
        let text = source(name);
        let body = parse(name, text)
            .unwrap_or_else(|| panic!("procedures/{name}.sql does not parse"))
            .body;
        if matches!(*name, "get_system_metrics" | "warm_up") {
            assert!(!body.contains(GUARD), "{name} is exempt");
            continue;
        }
        let begin = body
            .find("\nBEGIN\n")
            .unwrap_or_else(|| panic!("{name}: no BEGIN"));
        let first = body[begin + "\nBEGIN\n".len()..]
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with("--"));
        assert_eq!(first, Some(GUARD), "{name}: the check comes first");
        assert!(body.contains("ERRCODE = 'DX006'"), "{name}");
    }
}

#[test]
fn the_sources_the_sql_files_cite_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let texts = PROCEDURE_SOURCES
        .iter()
        .map(|(name, text)| (format!("procedures/{name}.sql"), *text))
        .chain(
            STATEMENT_FILES
                .iter()
                .map(|(p, n, text)| (format!("statements/{p}/{n}.sql"), *text)),
        );
    for (file, text) in texts {
        for (at, _) in text.match_indices("src/") {
            let cited: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '.'))
                .collect();
            let cited = cited.trim_end_matches('.');
            if cited.ends_with(".rs") {
                assert!(
                    root.join(cited).is_file(),
                    "{file} cites {cited}, which does not exist"
                );
            }
        }
    }
}
