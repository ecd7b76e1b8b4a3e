//! `harness-probe BACKEND [panic]`: create the run's databases for BACKEND as tests would —
//! the template, the rollback-mode database and a private one — print their URLs (the
//! rollback-mode one first), then exit normally or panic. The harness's own tests run it to
//! prove every one is dropped at exit either way.
//!
//! `harness-probe BACKEND measure [N]`: what a test's private database costs — N (default
//! 20) created and dropped one after the other, against N migrated by the `migration`
//! crate — in milliseconds (median and mean).

use std::time::{Duration, Instant};

use tests::{Backend, RunDatabase};

fn main() {
    let mut args = std::env::args().skip(1);
    let backend = match args.next().as_deref() {
        Some("postgres") => Backend::Postgres,
        Some("mysql") => Backend::MySql,
        Some("sqlite") => Backend::Sqlite,
        other => {
            eprintln!("harness-probe: unknown backend {other:?}");
            std::process::exit(2);
        }
    };
    let run = RunDatabase::get(backend);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    match args.next().as_deref() {
        Some("measure") => {
            let rounds = args.next().and_then(|n| n.parse().ok()).unwrap_or(20);
            runtime.block_on(measure(backend, run, rounds));
        }
        mode => {
            println!("{}", run.url_for_test());
            println!("{}", runtime.block_on(run.private_database()).url());
            if mode == Some("panic") {
                panic!("harness-probe panics on purpose");
            }
        }
    }
}

async fn measure(backend: Backend, run: &'static RunDatabase, rounds: usize) {
    let (mut cloned, mut migrated, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        let private = run.cloned_database().await;
        cloned.push(started.elapsed());
        let started = Instant::now();
        private.drop_now().await;
        dropped.push(started.elapsed());
        let started = Instant::now();
        let fresh = run.migrated_database().await;
        migrated.push(started.elapsed());
        fresh.drop_now().await;
    }
    println!("{backend:?}, {rounds} rounds, ms (median / mean):");
    for (what, times) in [
        ("private database (clone of the template)", cloned),
        ("drop it", dropped),
        ("database migrated by the migration crate", migrated),
    ] {
        println!("  {what}: {}", summary(times));
    }
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = times.iter().map(|d| ms(*d)).sum::<f64>() / times.len() as f64;
    format!("{:.1} / {mean:.1}", ms(times[times.len() / 2]))
}
