//! A hostile `search_path`: another role plants, in a schema first on the
//! provider's `search_path`, functions and operators that match the
//! argument types the crate's SQL uses exactly where the built-in does not
//! (so PostgreSQL would pick theirs), each recording that it ran. Start-up,
//! a real runtime's load (activities, timers, events, sub-orchestrations)
//! and the admin and tenant operations run in both SQL modes; none of the
//! decoys may ever run. `guard` checks the same rule on the text.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use duroxide::runtime::registry::ActivityRegistry;
use duroxide::runtime::{Runtime, RuntimeOptions};
use duroxide::{
    ActivityContext, Client, OrchestrationContext, OrchestrationRegistry, OrchestrationStatus,
};
use duroxide_postgres::{PostgresOptions, PostgresProvider, SchemaName, SqlMode, tenants};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use crate::support::{
    Kind, Slot, connect_options, drop_schema, fresh_schema_name, in_both_modes,
    reading_every_tenant, with_schema,
};

mod guard;

/// The decoys, planted by the hostile role in `{{hostile}}` (which it owns).
/// Each records its signature in `{{hostile}}.calls` (anyone may insert)
/// and then does what the built-in would, so a decoy that runs shows in the
/// audit table, not as a confusing failure further on.
const DECOYS: &str = r#"
CREATE TABLE {{hostile}}.calls (decoy text NOT NULL);
GRANT USAGE ON SCHEMA {{hostile}} TO PUBLIC;
GRANT INSERT, SELECT ON {{hostile}}.calls TO PUBLIC;
CREATE FUNCTION {{hostile}}.fired(d text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN INSERT INTO {{hostile}}.calls VALUES (d); END $$;

-- Functions the crate calls with an argument the built-in takes only
-- through an implicit cast, or whose built-in is polymorphic.
CREATE FUNCTION {{hostile}}.format(a text, b text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('format(text, text)'); RETURN pg_catalog.format(a, b); END $$;
CREATE FUNCTION {{hostile}}.format(a text, b text, c text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('format(text, text, text)'); RETURN pg_catalog.format(a, b, c); END $$;
CREATE FUNCTION {{hostile}}.format(a text, b name, c name, d text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('format(text, name, name, text)');
      RETURN pg_catalog.format(a, b, c, d); END $$;
CREATE FUNCTION {{hostile}}.hashtextextended(a text, b integer) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('hashtextextended(text, integer)');
      RETURN pg_catalog.hashtextextended(a, b::bigint); END $$;
CREATE FUNCTION {{hostile}}.cardinality(a text[]) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('cardinality(text[])'); RETURN pg_catalog.cardinality(a); END $$;
CREATE FUNCTION {{hostile}}.cardinality(a bigint[]) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('cardinality(bigint[])'); RETURN pg_catalog.cardinality(a); END $$;
CREATE FUNCTION {{hostile}}.array_length(a text[], d integer) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('array_length(text[], integer)');
      RETURN pg_catalog.array_length(a, d); END $$;
CREATE FUNCTION {{hostile}}.array_length(a bigint[], d integer) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('array_length(bigint[], integer)');
      RETURN pg_catalog.array_length(a, d); END $$;
CREATE FUNCTION {{hostile}}.unnest(a text[]) RETURNS SETOF text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('unnest(text[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION {{hostile}}.unnest(a bigint[]) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('unnest(bigint[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION {{hostile}}.unnest(a integer[]) RETURNS SETOF integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('unnest(integer[])'); RETURN QUERY SELECT pg_catalog.unnest(a); END $$;
CREATE FUNCTION {{hostile}}.agg_text(s text[], v text) RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('array_agg(text)'); RETURN pg_catalog.array_append(s, v); END $$;
CREATE AGGREGATE {{hostile}}.array_agg(text) (SFUNC = {{hostile}}.agg_text, STYPE = text[]);
CREATE FUNCTION {{hostile}}.agg_bigint(s bigint[], v bigint) RETURNS bigint[] LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('array_agg(bigint)'); RETURN pg_catalog.array_append(s, v); END $$;
CREATE AGGREGATE {{hostile}}.array_agg(bigint) (SFUNC = {{hostile}}.agg_bigint, STYPE = bigint[]);
-- pg_notify-like helpers: a closer match for arguments that are not text.
CREATE FUNCTION {{hostile}}.pg_notify(c varchar, p varchar) RETURNS void LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('pg_notify(varchar, varchar)'); PERFORM pg_catalog.pg_notify(c, p); END $$;
CREATE FUNCTION {{hostile}}.pg_notify(c name, p text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('pg_notify(name, text)'); PERFORM pg_catalog.pg_notify(c, p); END $$;
-- Clocks, settings and catalogue helpers: exact matches of the built-ins,
-- which `pg_catalog` (searched first unless the path lists it) must win.
CREATE FUNCTION {{hostile}}.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('now()'); RETURN pg_catalog.now(); END $$;
CREATE FUNCTION {{hostile}}.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('clock_timestamp()'); RETURN pg_catalog.clock_timestamp(); END $$;
CREATE FUNCTION {{hostile}}.statement_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('statement_timestamp()'); RETURN pg_catalog.statement_timestamp(); END $$;
CREATE FUNCTION {{hostile}}.hashtext(a text) RETURNS integer LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('hashtext(text)'); RETURN pg_catalog.hashtext(a); END $$;
CREATE FUNCTION {{hostile}}.set_config(a text, b text, c boolean) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('set_config(text, text, boolean)'); RETURN pg_catalog.set_config(a, b, c); END $$;

-- Operators the crate could apply to operands of mixed types.
CREATE FUNCTION {{hostile}}.num_times_int(a numeric, b integer) RETURNS numeric LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('numeric * integer'); RETURN a OPERATOR(pg_catalog.*) b::numeric; END $$;
CREATE OPERATOR {{hostile}}.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = {{hostile}}.num_times_int);
CREATE FUNCTION {{hostile}}.float_times_int(a float8, b integer) RETURNS float8 LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('float8 * integer'); RETURN a OPERATOR(pg_catalog.*) b::float8; END $$;
CREATE OPERATOR {{hostile}}.* (LEFTARG = float8, RIGHTARG = integer, FUNCTION = {{hostile}}.float_times_int);
CREATE FUNCTION {{hostile}}.text_cat_proc(a text, b regprocedure) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text || regprocedure'); RETURN a OPERATOR(pg_catalog.||) b::text; END $$;
CREATE OPERATOR {{hostile}}.|| (LEFTARG = text, RIGHTARG = regprocedure, FUNCTION = {{hostile}}.text_cat_proc);
CREATE FUNCTION {{hostile}}.text_cat_bigint(a text, b bigint) RETURNS text LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text || bigint'); RETURN a OPERATOR(pg_catalog.||) b::text; END $$;
CREATE OPERATOR {{hostile}}.|| (LEFTARG = text, RIGHTARG = bigint, FUNCTION = {{hostile}}.text_cat_bigint);
CREATE FUNCTION {{hostile}}.text_arr_append(a text[], b text) RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text[] || text'); RETURN pg_catalog.array_append(a, b); END $$;
CREATE OPERATOR {{hostile}}.|| (LEFTARG = text[], RIGHTARG = text, FUNCTION = {{hostile}}.text_arr_append);
CREATE FUNCTION {{hostile}}.text_arr_cat(a text[], b text[]) RETURNS text[] LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text[] || text[]'); RETURN pg_catalog.array_cat(a, b); END $$;
CREATE OPERATOR {{hostile}}.|| (LEFTARG = text[], RIGHTARG = text[], FUNCTION = {{hostile}}.text_arr_cat);
CREATE FUNCTION {{hostile}}.text_arr_overlap(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text[] && text[]'); RETURN a OPERATOR(pg_catalog.&&) b; END $$;
CREATE OPERATOR {{hostile}}.&& (LEFTARG = text[], RIGHTARG = text[], FUNCTION = {{hostile}}.text_arr_overlap);
CREATE FUNCTION {{hostile}}.text_arr_contains(a text[], b text[]) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN PERFORM {{hostile}}.fired('text[] @> text[]'); RETURN a OPERATOR(pg_catalog.@>) b; END $$;
CREATE OPERATOR {{hostile}}.@> (LEFTARG = text[], RIGHTARG = text[], FUNCTION = {{hostile}}.text_arr_contains);
"#;

/// The hostile role, its schema of decoys, and a pool whose connections put
/// that schema first on their `search_path` (as `ALTER ROLE ... SET
/// search_path` or a shared `public` would).
struct Hostile {
    admin: PgPool,
    role: String,
    schema: String,
    pool: PgPool,
}

impl Hostile {
    async fn plant(admin: &PgPool) -> Self {
        let schema = fresh_schema_name("decoys");
        let role = schema.clone();
        for ddl in [
            format!("CREATE ROLE \"{role}\" NOLOGIN"),
            format!("CREATE SCHEMA \"{schema}\" AUTHORIZATION \"{role}\""),
        ] {
            sqlx::query(sqlx::AssertSqlSafe(ddl.to_string()))
                .execute(admin)
                .await
                .unwrap_or_else(|e| panic!("{ddl}: {e}"));
        }
        // Planted by the hostile role itself: it owns what it creates.
        let mut conn = admin.acquire().await.expect("connection");
        let plant = format!(
            "SET ROLE \"{role}\";\n{}\nRESET ROLE;",
            DECOYS.replace("{{hostile}}", &format!("\"{schema}\""))
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(plant.to_string()))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("plant decoys: {e}"));
        drop(conn);
        let pool = PgPoolOptions::new()
            .max_connections(12)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(connect_options().options([("search_path", format!("{schema},public"))]))
            .await
            .expect("pool with the hostile search_path");
        // The decoys are live for this pool: an unqualified call runs them.
        let probe: (String, i64) = sqlx::query_as(
            "SELECT format('%s'::text, 'x'::text), pg_catalog.count(*) FROM unnest(ARRAY['a']::text[])",
        )
        .fetch_one(&pool)
        .await
        .expect("probe the decoys");
        assert_eq!(probe, ("x".to_string(), 1));
        let hostile = Self {
            admin: admin.clone(),
            role,
            schema,
            pool,
        };
        let fired = hostile.fired().await;
        assert_eq!(
            fired,
            ["format(text, text)", "unnest(text[])"]
                .map(String::from)
                .into_iter()
                .collect::<BTreeSet<_>>(),
            "the probe must reach the decoys"
        );
        hostile.clear().await;
        hostile
    }

    /// The decoys that ran so far.
    async fn fired(&self) -> BTreeSet<String> {
        sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(format!(
            "SELECT decoy FROM \"{}\".calls",
            self.schema
        )))
        .fetch_all(&self.admin)
        .await
        .expect("read the audit table")
        .into_iter()
        .collect()
    }

    async fn clear(&self) {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "TRUNCATE \"{}\".calls",
            self.schema
        )))
        .execute(&self.admin)
        .await
        .expect("clear the audit table");
    }

    async fn remove(self) {
        self.pool.close().await;
        drop_schema(&self.admin, &self.schema).await;
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP ROLE IF EXISTS \"{}\"",
            self.role
        )))
        .execute(&self.admin)
        .await;
    }
}

/// Parent: an activity, a timer, an external event and a sub-orchestration
/// (itself an activity), with a custom status on the way.
async fn run_load(provider: Arc<PostgresProvider>, prefix: &str) {
    let _slot = Slot::acquire(Kind::Runtime);
    let activities = ActivityRegistry::builder()
        .register("Echo", |_ctx: ActivityContext, input: String| async move {
            Ok(format!("echo:{input}"))
        })
        .build();
    let orchestrations = OrchestrationRegistry::builder()
        .register(
            "Parent",
            |ctx: OrchestrationContext, input: String| async move {
                let a = ctx.schedule_activity("Echo", input.clone()).await?;
                ctx.set_custom_status("timer");
                ctx.schedule_timer(Duration::from_millis(50)).await;
                let event = ctx.dequeue_event("Go").await;
                let child = ctx.schedule_sub_orchestration("Child", input).await?;
                Ok(format!("{a}|{event}|{child}"))
            },
        )
        .register(
            "Child",
            |ctx: OrchestrationContext, input: String| async move {
                ctx.schedule_activity("Echo", format!("child-{input}"))
                    .await
            },
        )
        .build();
    let options = RuntimeOptions {
        dispatcher_min_poll_interval: Duration::from_millis(10),
        ..Default::default()
    };
    let runtime =
        Runtime::start_with_options(provider.clone(), activities, orchestrations, options).await;
    let client = Client::new(provider.clone());
    let ids: Vec<String> = (0..3).map(|i| format!("{prefix}-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client
            .start_orchestration(id, "Parent", i.to_string())
            .await
            .expect("start");
    }
    for id in &ids {
        // Mailbox semantics: kept until the instance waits for it.
        client.enqueue_event(id, "Go", "go").await.expect("raise");
    }
    for (i, id) in ids.iter().enumerate() {
        match client
            .wait_for_orchestration(id, Duration::from_secs(60))
            .await
            .expect("wait")
        {
            OrchestrationStatus::Completed { output, .. } => {
                assert_eq!(output, format!("echo:{i}|go|echo:child-{i}"), "{id}");
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    // The admin surface, through the client (procedures or inline SQL).
    let listed = client.list_all_instances().await.expect("list");
    assert!(listed.len() >= 6, "parents and children: {listed:?}");
    client
        .list_instances_by_status("Completed")
        .await
        .expect("by status");
    client.get_instance_info(&ids[0]).await.expect("info");
    client
        .get_execution_info(&ids[0], 1)
        .await
        .expect("execution");
    client.list_executions(&ids[0]).await.expect("executions");
    client
        .read_execution_history(&ids[0], 1)
        .await
        .expect("history");
    client.get_system_metrics().await.expect("metrics");
    client.get_queue_depths().await.expect("depths");
    client.get_instance_tree(&ids[0]).await.expect("tree");
    client
        .get_orchestration_stats(&ids[0])
        .await
        .expect("stats");
    client.get_kv_all_values(&ids[0]).await.expect("kv");
    client
        .prune_executions(&ids[0], Default::default())
        .await
        .expect("prune");
    client
        .prune_executions_bulk(Default::default(), Default::default())
        .await
        .expect("prune bulk");
    client
        .delete_instance(&ids[0], false)
        .await
        .expect("delete");
    client
        .delete_instance_bulk(Default::default())
        .await
        .expect("delete bulk");
    provider.orphaned_instances(10).await.expect("orphans");
    assert!(provider.health().await.is_ready());
    runtime.shutdown(None).await;
}

/// Start-up, load, admin and tenant operations with the decoys planted;
/// then no decoy may have run.
async fn nothing_planted_ever_runs(mode: SqlMode) {
    with_schema("hostile_path", |schema| async move {
        let hostile = Hostile::plant(&schema.pool).await;
        // Start-up: migrations and, in procedure mode, the procedures.
        let provider = Arc::new(
            PostgresProvider::from_pool_with(
                hostile.pool.clone(),
                PostgresOptions::default()
                    .schema(schema.name.clone())
                    .sql_mode(mode),
            )
            .await
            .unwrap_or_else(|e| panic!("{mode} provider: {e}")),
        );
        run_load(provider.clone(), "hostile").await;
        // Tenant operations, on this schema and on a second one provisioned
        // from the install script, then uninstalled and dropped.
        let name = SchemaName::new(&schema.name).expect("name");
        let second = SchemaName::new(&fresh_schema_name("hostile_t2")).expect("name");
        let pool = &hostile.pool;
        assert!(tenants::list(pool).await.expect("list").contains(&name));
        tenants::status(pool, &name).await.expect("status");
        {
            let _every = reading_every_tenant().await;
            tenants::status_all(pool).await.expect("status all");
        }
        sqlx::raw_sql(sqlx::AssertSqlSafe(
            tenants::install_script(&second, mode, None).to_string(),
        ))
        .execute(pool)
        .await
        .expect("run the install script");
        for outcome in
            tenants::verify_many(pool, &[name.clone(), second.clone()], mode, |_| {}).await
        {
            outcome.result.expect("verify");
        }
        for outcome in
            tenants::migrate_many(pool, &[name.clone(), second.clone()], mode, |_| {}).await
        {
            outcome.result.expect("migrate");
        }
        tenants::uninstall_procedures(pool, &second)
            .await
            .expect("uninstall");
        tenants::drop_tenant(pool, &second, true)
            .await
            .expect("drop the second tenant");
        drop(provider);
        let fired = hostile.fired().await;
        drop_schema(&schema.pool, second.as_str()).await;
        hostile.remove().await;
        assert!(
            fired.is_empty(),
            "{mode}: decoys on the search_path ran: {fired:?}"
        );
    })
    .await;
}

in_both_modes!(nothing_planted_ever_runs:
    nothing_planted_runs_with_procedures, nothing_planted_runs_inline; 4);
