//! Inline SQL: what [`SqlMode::InlineSql`] sends
//! instead of calling the stored procedures.
//!
//! One truth, two renderings:
//!
//! * A procedure whose body is a single statement (plpgsql
//!   `BEGIN [RETURN QUERY] <statement>; END`, or `LANGUAGE sql`) is **derived**: inline mode sends
//!   the body itself, each `p_name` parameter replaced by `$n::type` from the
//!   signature. There is no second copy to keep in step.
//! * A procedure with control flow (loops, early returns, raised errors) is
//!   plpgsql around include markers; each marker stands for a statement file
//!   `statements/NAME/STATEMENT.sql` (see [`crate::statement_file`]). A Rust
//!   driver in this module runs the same statement files, each parameter name
//!   replaced by `$n::type`, in one transaction, step for step like the
//!   procedure. Only the control flow exists twice.
//!
//! Either way the same tables, the same locks (claim rows included) and the
//! same `DX...` SQLSTATEs are used, so processes in both modes can serve one
//! schema at the same time.

use sqlx::{Connection, Executor, PgConnection};

use crate::config::SqlMode;
use crate::embedded::{PROCEDURE_FILES, STATEMENT_FILES};
use crate::error::{PostgresProviderError, Result};
use crate::pooler::{Conn, Db, Deadline, answered_by};
use crate::schema::SchemaName;

pub(crate) mod deletion;
pub(crate) mod metrics;
pub(crate) mod orchestration;
pub(crate) mod turn_ack;
pub(crate) mod warm_up;
pub(crate) mod worker;

/// One inline transaction on a connection of its own, safe to cancel.
///
/// The runtime cancels fetches (shutdown, timeouts). A multi-statement
/// transaction dropped between two awaits must not leave its connection in
/// the pool with the transaction still open (sqlx cannot always roll back a
/// transaction whose `BEGIN` was interrupted), so a transaction that neither
/// committed nor rolled back when dropped closes its connection instead: the
/// server rolls it back.
pub(crate) struct Tx {
    /// The connection, until the transaction ends and it is released.
    conn: Option<Conn>,
    /// Where the connection is released to.
    db: Db,
    finished: bool,
    /// Behind a transaction pooler: statements prepared in the transaction
    /// are closed before it ends (see [`crate::pooler`]).
    pooled: bool,
    /// When the server must have answered the whole transaction, from its
    /// `BEGIN` to its end ([`Db::call_timeout`]); past it the transaction
    /// is given up on and its connection closed.
    deadline: Option<Deadline>,
}

impl Tx {
    /// Acquires a connection and starts a transaction on it that waits at
    /// most a second for a lock ([`Db::bounded_begin`]): every inline
    /// transaction (a fetch, an ack, a delete, a prune, the metrics).
    pub(crate) async fn begin_bounded(pool: &Db) -> Result<Self> {
        let conn = crate::observe::acquire(pool, crate::SqlMode::InlineSql).await?;
        Self::begin_on(pool, conn).await
    }

    /// [`Tx::begin_bounded`] on `conn`, a connection of `pool` the caller
    /// acquired: a claim's, which counts as sent once it holds one (as a
    /// procedure call does), and so acquires it before its transaction is
    /// detached ([`detached`]). A claim dropped while it waits for a
    /// connection then claims nothing later.
    pub(crate) async fn begin_on(pool: &Db, conn: Conn) -> Result<Self> {
        let mut tx = Self {
            conn: Some(conn),
            db: pool.clone(),
            finished: false,
            pooled: pool.pooled_begin().is_some(),
            deadline: Deadline::after(pool.call_timeout()),
        };
        let deadline = tx.deadline;
        answered_by(
            deadline,
            tx.conn()?.execute(sqlx::raw_sql(pool.bounded_begin())),
        )
        .await?;
        Ok(tx)
    }

    /// When the server must have answered the transaction: statements run
    /// in it go through [`answered_by`] with this.
    pub(crate) fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// The transaction's connection (there until the transaction ends).
    pub(crate) fn conn(&mut self) -> Result<&mut PgConnection> {
        match self.conn.as_mut() {
            Some(conn) => Ok(conn),
            None => Err(sqlx::Error::PoolClosed.into()),
        }
    }

    /// Commits when `outcome` is `Ok`, rolls back otherwise, and returns it.
    pub(crate) async fn finish<T>(self, outcome: Result<T>) -> Result<T> {
        self.end(outcome, "COMMIT").await
    }

    /// [`Tx::finish`] for a transaction that must commit durably although a
    /// fetch's statement in it asked for a lazy commit
    /// (`inline/durable_commit.sql`, one round trip as a plain commit).
    pub(crate) async fn finish_durably<T>(self, outcome: Result<T>) -> Result<T> {
        self.end(outcome, DURABLE_COMMIT).await
    }

    /// Ends the transaction with `commit` when `outcome` is `Ok`, rolls it
    /// back otherwise, and returns `outcome`.
    async fn end<T>(mut self, outcome: Result<T>, commit: &'static str) -> Result<T> {
        let end = if outcome.is_ok() { commit } else { "ROLLBACK" };
        let deadline = self.deadline;
        if self.pooled {
            // The next transaction may be on another server connection:
            // leave no named statement behind, here or in sqlx's cache.
            answered_by(deadline, self.conn()?.clear_cached_statements()).await?;
        }
        // A simple query: unnamed, and the durable commit's two statements
        // in one round trip.
        answered_by(deadline, self.conn()?.execute(sqlx::raw_sql(end))).await?;
        self.finished = true;
        if let Some(conn) = self.conn.take() {
            self.db.release(conn);
        }
        outcome
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if !self.finished {
            // Dropped mid-transaction: close the connection rather than
            // return it to the pool inside an open transaction.
            if let Some(conn) = self.conn.as_mut() {
                conn.close_on_drop();
            }
        }
    }
}

/// Restores the session's `synchronous_commit` and commits.
const DURABLE_COMMIT: &str = include_str!("../../inline/durable_commit.sql");

/// Runs an inline transaction on a task of its own and waits for it.
///
/// A procedure call, once sent, runs to completion on the server even if
/// the caller stops waiting. Detaching the inline transaction gives inline
/// mode the same behaviour: a cancelled fetch still commits the lease it
/// took (it expires like an abandoned one), instead of rolling back halfway.
pub(crate) async fn detached<T, F>(transaction: F) -> Result<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = Result<T>> + Send + 'static,
{
    // The operation's pool scope goes with it (see `crate::recycle`).
    tokio::spawn(crate::recycle::carry(transaction))
        .await
        .map_err(|e| PostgresProviderError::Interrupted {
            reason: e.to_string(),
        })?
}

/// A stored-procedure file, taken apart.
#[derive(Debug)]
pub(crate) struct Signature<'a> {
    /// Parameters in order: (name, type).
    pub params: Vec<(&'a str, &'a str)>,
    /// `sql` or `plpgsql`.
    pub language: &'a str,
    /// Text between `AS $$` and the closing `$$`.
    pub body: &'a str,
}

/// Parses the `CREATE OR REPLACE FUNCTION {{schema}}.NAME{{suffix}}(...)`
/// file of `name`.
pub(crate) fn parse<'a>(name: &str, text: &'a str) -> Option<Signature<'a>> {
    let header = format!("CREATE OR REPLACE FUNCTION {{{{schema}}}}.{name}{{{{suffix}}}}(");
    let start = text.find(&header)? + header.len();
    let rest = &text[start..];
    let mut depth = 0usize;
    let close = rest.char_indices().find_map(|(i, c)| match c {
        '(' => {
            depth += 1;
            None
        }
        ')' if depth == 0 => Some(i),
        ')' => {
            depth -= 1;
            None
        }
        _ => None,
    })?;
    let params = rest[..close]
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once(char::is_whitespace))
        // A default (`p_x boolean DEFAULT false`) is not part of the type.
        .map(|p| p.map(|(n, t)| (n.trim(), t.split(" DEFAULT ").next().unwrap_or(t).trim())))
        .collect::<Option<Vec<_>>>()?;
    let language = rest
        .lines()
        .find_map(|l| l.trim().strip_prefix("LANGUAGE "))?
        .trim();
    let body_start = rest.find("AS $$")? + "AS $$".len();
    let body_end = rest.rfind("$$")?;
    (body_end > body_start).then(|| Signature {
        params,
        language,
        body: &rest[body_start..body_end],
    })
}

/// The single statement a procedure body consists of, without its `;`.
fn single_statement<'a>(sig: &Signature<'a>) -> Option<&'a str> {
    let body = sig.body.trim();
    let statement = match sig.language {
        "sql" => body,
        "plpgsql" => {
            let body = body
                .strip_prefix("#variable_conflict use_column")
                .unwrap_or(body)
                .trim();
            let inner = body.strip_prefix("BEGIN")?.strip_suffix("END")?.trim();
            inner.strip_prefix("RETURN QUERY").unwrap_or(inner).trim()
        }
        _ => return None,
    };
    let statement = statement.strip_suffix(';').unwrap_or(statement).trim();
    (!statement.contains(';')).then_some(statement)
}

/// Replaces each parameter reference in `statement` with `$n::type`.
/// Identifiers after a `.` (qualified columns), text inside string literals
/// and `--` comments are left alone.
fn bind_parameters(statement: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(statement.len() + 64);
    let mut chars = statement.char_indices().peekable();
    let mut in_literal = false;
    let mut in_comment = false;
    let mut previous = ' ';
    while let Some((i, c)) = chars.next() {
        if in_comment {
            out.push(c);
            in_comment = c != '\n';
            continue;
        }
        if !in_literal && c == '-' && chars.peek().is_some_and(|&(_, d)| d == '-') {
            in_comment = true;
            out.push(c);
            continue;
        }
        if in_literal {
            out.push(c);
            in_literal = c != '\'';
            previous = c;
            continue;
        }
        if c == '\'' {
            in_literal = true;
            out.push(c);
            previous = c;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' {
                    end = j + d.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
            let word = &statement[i..end];
            match params.iter().position(|(name, _)| *name == word) {
                Some(n) if previous != '.' => {
                    out.push_str(&format!("${}::{}", n + 1, params[n].1));
                }
                _ => out.push_str(word),
            }
            previous = 'x';
            continue;
        }
        out.push(c);
        if !c.is_whitespace() {
            previous = c;
        }
    }
    out
}

/// The inline statement derived from procedure `name`, if its body is a
/// single statement (a template: `{{schema}}` not yet rendered).
pub(crate) fn derived(name: &str) -> Option<String> {
    let (_, text) = PROCEDURE_FILES.iter().find(|(n, _)| *n == name)?;
    let sig = parse(name, text)?;
    let statement = single_statement(&sig)?;
    Some(bind_parameters(statement, &sig.params))
}

/// The procedure a call template invokes: `name` in
/// `{{schema}}.name{{suffix}}(`.
fn called_procedure(template: &str) -> Option<&str> {
    let at = template.find("{{schema}}.")? + "{{schema}}.".len();
    let rest = &template[at..];
    rest[..rest.find('(')?].strip_suffix(crate::schema::SUFFIX_MARKER)
}

/// Renders a statement template for `schema` in `mode`: in inline mode a
/// call of a derivable procedure becomes the procedure's own statement.
pub(crate) fn render(template: &str, schema: &SchemaName, mode: SqlMode) -> String {
    if mode == SqlMode::InlineSql
        && let Some(statement) = called_procedure(template).and_then(derived)
    {
        return schema.render(&statement);
    }
    schema.render(template)
}

/// The statement `statements/PROCEDURE/NAME.sql` as inline mode sends it (a
/// template: `{{schema}}` not yet rendered), its fragments included and each
/// parameter a typed placeholder. Missing or malformed file, or a fragment
/// missing: empty string (the unit tests below make sure every statement a
/// driver uses exists, parses and expands).
pub(crate) fn statement(procedure: &str, name: &str) -> String {
    let text_of = |procedure: &str, name: &str| {
        STATEMENT_FILES
            .iter()
            .find(|(p, n, _)| *p == procedure && *n == name)
            .map(|(_, _, text)| *text)
    };
    let fragment = |marker: &str| {
        let (p, n) = crate::statement_file::target(procedure, marker);
        text_of(p, n)
    };
    text_of(procedure, name)
        .and_then(|text| crate::statement_file::parse(text).ok())
        .and_then(|file| {
            crate::statement_file::expand_fragments(file.body, fragment)
                .ok()
                .map(|body| bind_parameters(&body, &file.params))
        })
        .unwrap_or_default()
}

/// Declares the rendered statements of one procedure's statement files
/// (`statements/PROCEDURE/FIELD.sql`), as inline mode sends them.
macro_rules! procedure_statements {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident from $procedure:literal {
            $( $(#[$field_meta:meta])* $field:ident, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone)]
        $vis struct $name {
            $( $(#[$field_meta])* pub(crate) $field: $crate::sql::Sql, )*
        }

        impl $name {
            /// Renders every statement for `schema`.
            pub(crate) fn render(schema: &$crate::schema::SchemaName) -> Self {
                Self { $( $field: $crate::sql::Sql::new(schema.render(&$crate::inline::statement($procedure, stringify!($field)))), )* }
            }

            /// `(procedure, statement)` of every field, for the unit tests.
            #[cfg(test)]
            pub(crate) const STATEMENTS: &'static [(&'static str, &'static str)] =
                &[$( ($procedure, stringify!($field)), )*];
        }
    };
}
pub(crate) use procedure_statements;

/// The inline statements of every driver, rendered once per provider.
#[derive(Debug, Clone)]
pub(crate) struct InlineSql {
    /// `fetch_orchestration_item`.
    pub fetch_orchestration: orchestration::FetchSql,
    /// `ack_orchestration_item`.
    pub ack_orchestration: orchestration::AckSql,
    /// `fetch_work_item`.
    pub fetch_work: worker::FetchSql,
    /// `delete_instances`, `delete_instance_bulk`, `prune_executions(_bulk)`.
    pub deletion: deletion::DeletionSql,
    /// `get_system_metrics`.
    pub metrics: metrics::MetricsSql,
    /// The first statement of the warm-up's transaction (`warm_up`).
    pub warm_up_begin: crate::sql::Sql,
}

impl InlineSql {
    /// Renders every statement for `schema`.
    pub(crate) fn render(schema: &SchemaName) -> Self {
        Self {
            fetch_orchestration: orchestration::FetchSql::render(schema),
            ack_orchestration: orchestration::AckSql::render(schema),
            fetch_work: worker::FetchSql::render(schema),
            deletion: deletion::DeletionSql::render(schema),
            metrics: metrics::MetricsSql::render(schema),
            warm_up_begin: crate::sql::Sql::new(schema.render(warm_up::BEGIN)),
        }
    }
}

#[cfg(test)]
mod tests;
