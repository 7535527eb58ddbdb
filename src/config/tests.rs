//! Unit tests of the options: which settings a pool carries, and where a
//! transaction pooler gets them.

use super::*;

#[test]
fn a_pool_is_told_apart_by_whether_it_carries_the_plan_settings() {
    let url = "postgres://u@h/db";
    let provider = PostgresOptions::default()
        .connect_options(url)
        .expect("options");
    assert!(carries_plan_settings(&provider));
    let plain: PgConnectOptions = url.parse().expect("url");
    assert!(!carries_plan_settings(&plain));
    let older = plain.options([("plan_cache_mode", "force_generic_plan")]);
    assert!(!carries_plan_settings(&older), "generic plans alone");
}

#[test]
fn a_pool_is_told_apart_by_whether_it_carries_the_lock_timeout() {
    let url = "postgres://u@h/db";
    for generic in [true, false] {
        let provider = PostgresOptions::default()
            .generic_plans(generic)
            .connect_options(url)
            .expect("options");
        assert!(carries_lock_timeout(&provider), "generic plans {generic}");
    }
    let plain: PgConnectOptions = url.parse().expect("url");
    assert!(!carries_lock_timeout(&plain));
    let longer = plain.options([("lock_timeout", "10s")]);
    assert!(!carries_lock_timeout(&longer), "another timeout");
    let pooled = PostgresOptions::default()
        .transaction_pooler(true)
        .connect_options(url)
        .expect("options");
    assert!(
        !carries_lock_timeout(&pooled),
        "set per transaction instead"
    );
}

#[test]
fn inline_sql_is_told_what_a_pool_lacks_of_the_provider_settings() {
    let url = "postgres://u@h/db";
    let plain: PgConnectOptions = url.parse().expect("url");
    for generic in [true, false] {
        let options = PostgresOptions::default().generic_plans(generic);
        let built = options.connect_options(url).expect("options");
        assert!(inline_lacks(&options, &built).is_empty(), "{generic}");
        let lacks = inline_lacks(&options, &plain);
        assert_eq!(lacks.len(), 1 + usize::from(generic), "{lacks:?}");
        assert_eq!(
            lacks.iter().any(|l| l.contains("enable_seqscan")),
            generic,
            "{lacks:?}"
        );
        assert!(
            lacks.iter().any(|l| l.contains("lock_timeout")),
            "{lacks:?}"
        );
    }
    // The planner settings without the lock timeout (a pool built from
    // an earlier release's connect options).
    let planned = plain.clone().options(PLAN_SETTINGS);
    let lacks = inline_lacks(&PostgresOptions::default(), &planned);
    assert!(
        lacks.len() == 1 && lacks[0].contains("lock_timeout"),
        "{lacks:?}"
    );
    // The operator's own pool with the timeout added as documented.
    let own = plain.clone().options([("lock_timeout", "1s")]);
    let untuned = PostgresOptions::default().generic_plans(false);
    assert!(inline_lacks(&untuned, &own).is_empty());
    let pooler = PostgresOptions::default().transaction_pooler(true);
    assert!(
        inline_lacks(&pooler, &plain).is_empty(),
        "set per transaction"
    );
}

#[test]
fn a_transaction_pooler_gets_its_settings_per_transaction_not_at_startup() {
    let options = PostgresOptions::default().statement_timeout(Some(Duration::from_secs(5)));
    let direct = options
        .connect_options("postgres://u@h/db")
        .expect("direct");
    let startup = direct.get_options().unwrap_or_default();
    assert!(startup.contains("plan_cache_mode") && startup.contains("statement_timeout"));
    assert!(
        startup.contains(r"default_transaction_isolation=read\ committed"),
        "{startup}"
    );
    assert!(startup.contains("enable_seqscan=off") && startup.contains("jit=off"));
    let pooled = options
        .clone()
        .transaction_pooler(true)
        .connect_options("postgres://u@h/db")
        .expect("pooled");
    assert_eq!(
        pooled.get_options(),
        None,
        "no startup options through a pooler"
    );
    assert_eq!(
        options.pooled_begin(),
        "BEGIN ISOLATION LEVEL READ COMMITTED; SET LOCAL statement_timeout = 5000; \
         SET LOCAL plan_cache_mode = force_generic_plan; \
         SET LOCAL enable_seqscan = off; SET LOCAL jit = off"
    );
    assert_eq!(
        PostgresOptions::default()
            .generic_plans(false)
            .pooled_begin(),
        "BEGIN ISOLATION LEVEL READ COMMITTED"
    );
}
