//! Finding notes (`GET /notes?q=…`) on every backend: the query language, ranking, snippets
//! and their offsets, pages, scoping, read-your-writes, hostile queries — and the plain
//! pages of a user who owns a tenth of a skewed table.
//!
//! The table-driven test gives every backend the same corpus and the same queries and
//! expects the same notes: the three full-text engines agree.

use std::collections::BTreeSet;

use actix_web::http::StatusCode;
use sea_orm::{ConnectionTrait, DbBackend, QueryTrait, Statement};
use serde_json::{Value, json};
use tests::{
    Backend, TestApp, assert_problem, backends,
    fixtures::{array, create_note, id_of, next_link, note_body},
    http::Reply,
};

/// `GET /notes?q=<query>` (and `extra` parameters, already encoded), as the app's user.
async fn search(app: &TestApp, query: &str, extra: &str) -> Reply {
    app.get(&search_path(query, extra)).await
}

fn search_path(query: &str, extra: &str) -> String {
    let q: String = url::form_urlencoded::byte_serialize(query.as_bytes()).collect();
    format!("/notes?q={q}{extra}")
}

/// The ids a successful search answers, in its order.
async fn found_ids(app: &TestApp, query: &str) -> Vec<i64> {
    let reply = search(app, query, "").await;
    assert_eq!(reply.status, StatusCode::OK, "q={query:?}: {reply:?}");
    array(&reply.json()).iter().map(id_of).collect()
}

/// Create one note per text, in order; their ids.
async fn create_texts(app: &TestApp, texts: &[&str]) -> Vec<i64> {
    let mut ids = Vec::new();
    for text in texts {
        ids.push(id_of(
            &create_note(app, None, &note_body(text, false)).await.json(),
        ));
    }
    ids
}

/// [`TestApp::signed_in`], and one note of the user's per text, in order: their ids.
async fn signed_in_with_texts(backend: Backend, texts: &[&str]) -> (TestApp, Vec<i64>) {
    let (app, _) = TestApp::signed_in(backend).await;
    let ids = create_texts(&app, texts).await;
    (app, ids)
}

/// The same on every backend (no stemming, no stop words, punctuation separates words).
const CORPUS: &[&str] = &[
    /* 0 */ "Apples and pears for the picnic",
    /* 1 */ "Apple pie recipe: apples, butter, flour",
    /* 2 */ "Bob's e-mail is bob@example.org",
    /* 3 */ "foo_bar config with WWW about it",
    /* 4 */ "Running shoes, run daily",
    /* 5 */ "Big red apple",
    /* 6 */ "red big apple",
    /* 7 */ "Café crème in the morning",
    /* 8 */ "Déjà vu at the CAFÉ",
    /* 9 */ "nothing to see here",
    /* 10 */ "to be or not to be",
    /* 11 */ "pear tart",
    /* 12 */ "日本語 テキスト 東京タワー",
];

/// Each query and the corpus notes (by index) it finds.
const QUERIES: &[(&str, &[usize])] = &[
    ("apple", &[1, 5, 6]),
    ("APPLES", &[0, 1]),
    ("appl*", &[0, 1, 5, 6]),
    ("\"big red\"", &[5]),
    ("\"red big\"", &[6]),
    ("\"big red", &[5]),
    ("apple -pie", &[5, 6]),
    ("red apple", &[5, 6]),
    ("example", &[2]),
    ("bob@example.org", &[2]),
    ("org bob", &[2]),
    ("foo", &[3]),
    ("bar", &[3]),
    ("with about www", &[3]),
    ("run", &[4]),
    ("run*", &[4]),
    ("café", &[7, 8]),
    ("CAFÉ crème", &[7]),
    ("cafe", &[]),
    ("\"not to be\"", &[10]),
    ("pear*", &[0, 11]),
    ("-apple pear*", &[0, 11]),
    ("tart -pear", &[]),
    ("tart -pea*", &[]),
    ("zebra", &[]),
    ("日本語", &[12]),
    ("a an apple", &[1, 5, 6]),
];

#[backends(sqlite, postgres, mysql)]
async fn every_operator_finds_the_same_notes_on_every_backend(backend: Backend) {
    let (app, ids) = signed_in_with_texts(backend, CORPUS).await;
    for (query, expected) in QUERIES {
        let expected: BTreeSet<i64> = expected.iter().map(|&i| ids[i]).collect();
        let found = found_ids(&app, query).await;
        assert_eq!(
            found.iter().copied().collect::<BTreeSet<i64>>(),
            expected,
            "q={query:?} on {backend:?}"
        );
        assert_eq!(found.len(), expected.len(), "each note once: q={query:?}");
    }
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn more_occurrences_rank_first_and_ties_go_to_the_newest(backend: Backend) {
    let (app, ids) = signed_in_with_texts(
        backend,
        &[
            "kiwi once, with other words here",
            "kiwi kiwi kiwi, and some words",
            "kiwi once, with other words here",
            "kiwi twice: kiwi and words",
        ],
    )
    .await;
    assert_eq!(
        found_ids(&app, "kiwi").await,
        [ids[1], ids[3], ids[2], ids[0]]
    );
    app.finish().await;
}

/// Two words, each 1 to 5 times: the order is their total, then the newest, page after page
/// (two notes a page, so PostgreSQL's pages cross every tier of its index, each way of
/// reaching a total included), and the same on every backend.
#[backends(sqlite, postgres, mysql)]
async fn two_words_rank_by_their_total_across_pages(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let mut shares = Vec::new();
    for left in 1..=5 {
        for right in 1..=5 {
            shares.push((left, right));
        }
    }
    let texts: Vec<String> = shares
        .iter()
        .map(|&(left, right)| {
            format!(
                "{}then {}and filler",
                "Maple, ".repeat(left),
                "cedar ".repeat(right)
            )
        })
        .collect();
    let ids = create_texts(&app, &texts.iter().map(String::as_str).collect::<Vec<_>>()).await;
    create_texts(&app, &["maple alone", "cedar alone", "maplewood cedars"]).await;
    let mut best_first: Vec<(usize, i64)> = shares
        .iter()
        .zip(&ids)
        .map(|(&(left, right), &id)| (left + right, id))
        .collect();
    best_first.sort_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut path = Some(search_path("cedar maple", "&limit=2"));
    while let Some(next) = path {
        let reply = app.get(&next).await;
        assert_eq!(reply.status, StatusCode::OK, "{next}: {reply:?}");
        seen.extend(array(&reply.json()).iter().map(id_of));
        path = next_link(&reply);
        assert!(seen.len() <= ids.len(), "the links end: {seen:?}");
    }
    assert_eq!(
        seen,
        best_first.iter().map(|&(_, id)| id).collect::<Vec<_>>()
    );
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn results_carry_snippets_and_character_offsets(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    let long = format!(
        "{} Ünïcode needle, then 😀 needle again {}",
        "😀 déjà ".repeat(60),
        "straw ".repeat(60)
    );
    let short = "short 😀 text with a Needle";
    let ids = create_texts(&app, &[&long, short]).await;
    let reply = search(&app, "needle", "").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let results = array(&reply.json());
    assert_eq!(
        results.iter().map(id_of).collect::<Vec<_>>(),
        [ids[0], ids[1]]
    );
    for result in &results {
        let object = result.as_object().unwrap();
        for field in [
            "id",
            "user_id",
            "text",
            "completed",
            "created_at",
            "updated_at",
        ] {
            assert!(object.contains_key(field), "{field} in {result}");
        }
        let snippet: Vec<char> = result["snippet"].as_str().unwrap().chars().collect();
        assert!(snippet.len() <= 200, "{result}");
        let matches = result["matches"].as_array().unwrap();
        assert!(!matches.is_empty(), "{result}");
        for span in matches {
            let (start, end) = (span[0].as_u64().unwrap(), span[1].as_u64().unwrap());
            let word: String = snippet[start as usize..end as usize].iter().collect();
            assert_eq!(word.to_lowercase(), "needle", "{result}");
        }
    }
    assert_eq!(results[0]["matches"].as_array().unwrap().len(), 2);
    assert_eq!(
        results[1]["snippet"], short,
        "a short text is its own snippet"
    );
    assert_eq!(results[1]["matches"], json!([[20, 26]]));
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn pages_walk_every_match_once(backend: Backend) {
    let (app, _) = TestApp::signed_in(backend).await;
    // "walk" 1 to 7 times: PostgreSQL's pages cross its top tier (5 and more) and each rank
    // below it.
    let times = |i: usize| i % 7 + 1;
    let items: Vec<Value> = (0..45)
        .map(|i| {
            note_body(
                &format!("{}number {i}", "walk ".repeat(times(i))),
                i % 2 == 0,
            )
        })
        .collect();
    let reply = app.post_json("/notes/bulk", &Value::Array(items)).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{reply:?}");
    let created_in_order: Vec<i64> = array(&reply.json()).iter().map(id_of).collect();
    let created: BTreeSet<i64> = created_in_order.iter().copied().collect();
    create_texts(&app, &["no match here"]).await;
    let mut best_first: Vec<(usize, i64)> = created_in_order
        .iter()
        .enumerate()
        .map(|(i, &id)| (times(i), id))
        .collect();
    best_first.sort_by(|a, b| b.cmp(a));

    let mut seen = Vec::new();
    let mut path = Some(search_path("walk", "&limit=10"));
    let mut pages = 0;
    while let Some(next) = path {
        let reply = app.get(&next).await;
        assert_eq!(reply.status, StatusCode::OK, "{next}: {reply:?}");
        let page = array(&reply.json());
        assert!(page.len() <= 10);
        seen.extend(page.iter().map(id_of));
        path = next_link(&reply);
        pages += 1;
        assert!(pages <= 6, "the links end");
    }
    assert_eq!(seen.len(), 45, "no note twice: {seen:?}");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), created);
    assert_eq!(
        seen,
        best_first.iter().map(|&(_, id)| id).collect::<Vec<_>>(),
        "most occurrences first, then the newest"
    );

    // Combined with `completed`: the even ones.
    let done = array(
        &search(&app, "walk", "&completed=true&limit=100")
            .await
            .json(),
    );
    assert_eq!(done.len(), 23);
    assert!(done.iter().all(|note| note["completed"] == true));
    // Default page size 20.
    assert_eq!(array(&search(&app, "walk", "").await.json()).len(), 20);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn another_users_notes_are_never_searched(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let other = app.sign_up_and_in("other").await;
    let mine = create_texts(&app, &["shared secret words"]).await;
    create_note(
        &app,
        Some(&other.token),
        &note_body("shared secret words", false),
    )
    .await;
    create_note(
        &app,
        Some(&other.token),
        &note_body("only theirs: xylophone", false),
    )
    .await;
    assert_eq!(found_ids(&app, "shared secret").await, mine);
    assert_eq!(found_ids(&app, "xylophone").await, Vec::<i64>::new());
    let theirs = array(
        &app.send_as(&other.token, tests::http::get(&search_path("shared", "")))
            .await
            .json(),
    );
    assert_eq!(theirs.len(), 1);
    assert_ne!(theirs[0]["user_id"], me.id);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn a_note_is_found_right_after_each_write(backend: Backend) {
    let (app, ids) = signed_in_with_texts(backend, &["fresh mango"]).await;
    let [id] = ids[..] else { unreachable!() };
    assert_eq!(found_ids(&app, "mango").await, [id]);

    let path = format!("/notes/{id}");
    let reply = app
        .patch_json(&path, &json!({"text": "fresh papaya"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(found_ids(&app, "mango").await, Vec::<i64>::new());
    assert_eq!(found_ids(&app, "papaya").await, [id]);

    let reply = app.patch_json(&path, &json!({"completed": true})).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(found_ids(&app, "papaya").await, [id]);

    assert_eq!(app.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_eq!(found_ids(&app, "papaya").await, Vec::<i64>::new());

    let bulk = json!([{"text": "bulk guava one"}, {"text": "bulk guava two"}]);
    let reply = app.post_json("/notes/bulk", &bulk).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(found_ids(&app, "guava").await.len(), 2);
    app.finish().await;
}

#[backends(sqlite, postgres, mysql)]
async fn queries_with_nothing_to_look_for_are_422_naming_q(backend: Backend) {
    let (app, _) = signed_in_with_texts(backend, &["something to find"]).await;
    for query in [
        "",
        "   ",
        "-apple",
        "!!! ???",
        "*",
        "-",
        "\"\"",
        "to be",
        &"x".repeat(257),
    ] {
        let reply = search(&app, query, "").await;
        let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(problem["errors"][0]["field"], "q", "q={query:?}: {problem}");
    }
    let longest = format!("something {}", "é".repeat(246));
    assert_eq!(search(&app, &longest, "").await.status, StatusCode::OK);
    let reply = search(&app, "something", "&limit=101").await;
    let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "limit");
    let reply = search(&app, "something", "&after=5").await;
    assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    let reply = search(&app, "something", "&order=sideways").await;
    let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "order");
    // `rank` is checked whether or not the request searches.
    let reply = app.get("/notes?rank=9223372036854775808").await;
    let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "rank");
    app.finish().await;
}

/// Words up to 64 letters are looked up in every index (MariaDB's holds them after the
/// owner's digits within its 84 characters); a longer word only narrows a search.
#[backends(sqlite, postgres, mysql)]
async fn words_up_to_64_letters_are_indexed_and_longer_ones_narrow(backend: Backend) {
    let longest = format!("{}z", "q".repeat(63));
    let too_long = format!("{}z", "r".repeat(64));
    let (app, ids) = signed_in_with_texts(
        backend,
        &[&format!("a {longest} word"), &format!("another {too_long}")],
    )
    .await;
    assert_eq!(found_ids(&app, &longest).await, [ids[0]]);
    assert_eq!(
        found_ids(&app, &format!("{}*", &longest[..40])).await,
        [ids[0]]
    );
    let reply = search(&app, &too_long, "").await;
    let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["errors"][0]["field"], "q", "{problem}");
    assert_eq!(
        found_ids(&app, &format!("another {too_long}")).await,
        [ids[1]]
    );
    app.finish().await;
}

/// MariaDB's `FULLTEXT` index cannot hold `user_id`: each word carries its owner instead
/// (`7xword`), so a search reads one user's entries of a common word, not everyone's.
#[backends(mysql)]
async fn mariadb_indexes_each_word_with_its_owner(backend: Backend) {
    let (app, me) = TestApp::signed_in(backend).await;
    let other = app.sign_up_and_in("other").await;
    let mine = create_texts(&app, &["the walrus said"]).await;
    create_note(&app, Some(&other.token), &note_body("a walrus too", false)).await;
    let matching = async |against: String| -> Vec<i64> {
        let rows = app
            .conn()
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::MySql,
                "SELECT id FROM notes \
                 WHERE MATCH (search_text) AGAINST (? IN BOOLEAN MODE) ORDER BY id",
                [against.into()],
            ))
            .await
            .unwrap();
        rows.iter()
            .map(|row| row.try_get_by_index(0).unwrap())
            .collect()
    };
    assert_eq!(matching(format!("+{}xwalrus", me.id)).await, mine);
    assert_eq!(matching("+walrus".to_owned()).await, Vec::<i64>::new());
    app.finish().await;
}

/// Operators and syntax of every backend's search language, SQL, and odd text.
const HOSTILE_QUERIES: &[&str] = &[
    "\"",
    "\"\"\"",
    "\"unbalanced quote",
    "(",
    ")",
    "((apple",
    "[apple]",
    "{apple}",
    "*",
    "**",
    "-",
    "--",
    "- -",
    "apple*)",
    "*apple",
    "a*b*c",
    "'; DROP TABLE notes; --",
    "apple' OR '1'='1",
    "1; SELECT pg_sleep(5)",
    "NEAR(apple pear)",
    "apple AND pear",
    "apple OR pear",
    "NOT apple",
    "text:apple",
    "^apple",
    "apple + pear",
    "apple & pear",
    "apple | pear",
    "!apple",
    "apple <-> pear",
    "apple:*",
    "+apple -pear ~pie <big >red @2",
    "\"apple\" @8",
    "apple\u{0}pear",
    "\u{0}",
    "e\u{0301}\u{0301}\u{0301}",
    "😀😀😀 apple",
    "\u{202E}elppa\u{202C} عربي עברית",
    "%_%",
    "\\apple\\",
    "$1 ?",
    "apple\npear\ttart",
];

#[backends(sqlite, postgres, mysql)]
async fn hostile_queries_never_fail_the_server(backend: Backend) {
    let (app, _) = signed_in_with_texts(backend, &["apple pear tart", "عربي עברית text"]).await;
    let longest = "apple ".repeat(43)[..256].to_owned();
    let too_long = format!("{longest}x");
    for query in HOSTILE_QUERIES
        .iter()
        .copied()
        .chain([longest.as_str(), too_long.as_str()])
    {
        let reply = search(&app, query, "").await;
        match reply.status {
            StatusCode::OK => assert!(reply.json().is_array(), "q={query:?}: {reply:?}"),
            StatusCode::UNPROCESSABLE_ENTITY => {
                let problem = assert_problem(&reply, StatusCode::UNPROCESSABLE_ENTITY);
                assert_eq!(problem["errors"][0]["field"], "q", "q={query:?}: {problem}");
            }
            status => panic!("q={query:?} answered {status}: {reply:?}"),
        }
    }
    // Operators of the backends' languages are words, or punctuation, here.
    assert_eq!(
        found_ids(&app, "apple OR pear").await.len(),
        1,
        "OR: too short a word"
    );
    assert_eq!(
        found_ids(&app, "NOT apple").await.len(),
        0,
        "NOT: a word the note lacks"
    );
    assert_eq!(
        found_ids(&app, "apple & !pear").await.len(),
        1,
        "punctuation"
    );
    app.finish().await;
}

/// A user who owns a tenth of the notes, all of them newer than everyone else's: their plain
/// pages, first and later ones, must read the `(user_id, id)` index in its order — not walk the
/// primary key past everyone else's notes (PostgreSQL's planner trap on skewed data), not sort
/// every note of the owner (MariaDB's filesort), and seek to the page's id (SQLite).
#[backends(sqlite, postgres, mysql)]
async fn a_heavy_users_pages_read_the_owner_index(backend: Backend) {
    let (app, heavy) = TestApp::signed_in(backend).await;
    let others = app.sign_up_and_in("others").await;
    let conn = app.conn();
    let db_backend = conn.get_database_backend();
    for (owner, count) in [(others.id, 60_000), (heavy.id, 6_000)] {
        let (series, text, now) = match db_backend {
            DbBackend::Postgres => (
                format!("generate_series(1, {count}) AS s(n)"),
                "'note ' || n",
                "now()",
            ),
            DbBackend::MySql => (
                format!("(SELECT seq AS n FROM seq_1_to_{count}) AS s"),
                "CONCAT('note ', n)",
                "UTC_TIMESTAMP(6)",
            ),
            _ => (
                format!(
                    "(WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s \
                     WHERE n < {count}) SELECT n FROM s) AS s"
                ),
                "'note ' || n",
                "strftime('%Y-%m-%dT%H:%M:%f000+00:00', 'now')",
            ),
        };
        conn.execute_unprepared(&format!(
            "INSERT INTO notes (user_id, text, completed, created_at, updated_at) \
             SELECT {owner}, {text}, false, {now}, {now} FROM {series}"
        ))
        .await
        .unwrap();
    }
    let analyze = match db_backend {
        DbBackend::MySql => "ANALYZE TABLE notes",
        _ => "ANALYZE notes",
    };
    conn.execute_unprepared(analyze).await.unwrap();
    let middle = array(&app.get("/notes?limit=1&order=desc").await.json())[0]["id"]
        .as_i64()
        .unwrap()
        - 3_000;
    for query in [
        "limit=20".to_owned(),
        "limit=20&order=desc".to_owned(),
        format!("limit=20&after={middle}"),
        format!("limit=20&order=desc&after={middle}"),
    ] {
        let list = api::http::pagination::ListQuery::parse(&query).unwrap();
        let newest_first = query.contains("desc");
        let select = api::routes::notes::page_of(db_backend, heavy.id, &list, newest_first, None);
        let plan = query_plan(conn, select.build(db_backend)).await;
        // A later page may also range over the primary key when the page's id bounds few rows
        // (MariaDB does, here): no sort and no walk past everyone else's notes is what counts.
        if !query.contains("after") {
            assert!(plan.contains("notes_user_id_id_idx"), "{query}:\n{plan}");
        }
        for trap in ["notes_pkey", "filesort", "TEMP B-TREE"] {
            assert!(!plan.contains(trap), "{query}: {trap}\n{plan}");
        }
        if db_backend == DbBackend::Sqlite && query.contains("after") {
            assert!(plan.contains("user_id=? AND id"), "{query}:\n{plan}");
        }
    }
    // And the pages still read right.
    let page = array(&app.get("/notes?limit=20&order=desc").await.json());
    assert_eq!(page.len(), 20);
    assert!(page.iter().all(|note| note["user_id"] == heavy.id));
    app.finish().await;
}

/// How the database would run `statement`: PostgreSQL's `EXPLAIN`, MariaDB's (each table's
/// index and `Extra`), SQLite's `EXPLAIN QUERY PLAN`.
async fn query_plan(conn: &impl ConnectionTrait, statement: Statement) -> String {
    let backend = conn.get_database_backend();
    let explain = match backend {
        DbBackend::Sqlite => "EXPLAIN QUERY PLAN",
        _ => "EXPLAIN",
    };
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            backend,
            format!("{explain} {}", statement.sql),
            statement.values.unwrap(),
        ))
        .await
        .unwrap();
    let line = |row: &sea_orm::QueryResult| match backend {
        DbBackend::Postgres => row.try_get_by_index::<String>(0).unwrap(),
        DbBackend::MySql => format!(
            "key {:?}, {:?}",
            row.try_get::<Option<String>>("", "key").unwrap(),
            row.try_get::<Option<String>>("", "Extra").unwrap()
        ),
        _ => row.try_get_by_index::<String>(3).unwrap(),
    };
    rows.iter().map(line).collect::<Vec<_>>().join("\n")
}
