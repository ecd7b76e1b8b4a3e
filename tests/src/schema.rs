//! What a database's schema is, as text lines to compare: the migrations' tests check that
//! down-then-up restores it, the harness's that a private database (a clone of the run's
//! template) has exactly the schema the migrations make.

use sea_orm::{ConnectionTrait, DbBackend, Statement};

/// Every column, index, constraint (foreign keys with their rules included) and trigger of the
/// application's tables — every table but `seaql_migrations` — and PostgreSQL's functions
/// (but extensions'), one line each, sorted.
pub async fn fingerprint(db: &impl ConnectionTrait) -> Vec<String> {
    let backend = db.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => {
            "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') AS line FROM sqlite_master \
             WHERE name NOT LIKE 'sqlite_%' AND tbl_name <> 'seaql_migrations' ORDER BY 1"
        }
        DbBackend::Postgres => {
            "SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable \
             || ' ' || COALESCE(column_default, '') || ' ' \
             || COALESCE(character_maximum_length::text, '') AS line \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'seaql_migrations' \
             UNION ALL SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename <> 'seaql_migrations' \
             UNION ALL SELECT 'constraint ' || conrelid::regclass::text || ' ' || conname \
             || ': ' || pg_get_constraintdef(oid) FROM pg_constraint \
             WHERE connamespace = current_schema()::regnamespace \
             AND conrelid::regclass::text <> 'seaql_migrations' \
             UNION ALL SELECT 'trigger ' || event_object_table || ' ' || trigger_name || ' ' \
             || action_timing || ' ' || event_manipulation || ': ' || action_statement \
             FROM information_schema.triggers WHERE trigger_schema = current_schema() \
             UNION ALL SELECT 'function ' || proname || ': ' || md5(prosrc) FROM pg_proc p \
             WHERE pronamespace = current_schema()::regnamespace AND NOT EXISTS \
             (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \
             ORDER BY 1"
        }
        _ => {
            "SELECT CONCAT(table_name, '.', column_name, ' ', column_type, ' ', is_nullable, ' ', \
             COALESCE(column_default, ''), ' ', COALESCE(collation_name, ''), ' ', extra) AS line \
             FROM information_schema.columns \
             WHERE table_schema = DATABASE() AND table_name <> 'seaql_migrations' \
             UNION ALL SELECT CONCAT('table ', table_name, ' ', engine, ' ', table_collation) \
             FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name <> 'seaql_migrations' \
             UNION ALL SELECT CONCAT('index ', index_name, ': ', table_name, '.', column_name, \
             ' #', seq_in_index, ' unique=', 1 - non_unique) FROM information_schema.statistics \
             WHERE table_schema = DATABASE() AND table_name <> 'seaql_migrations' \
             UNION ALL SELECT CONCAT('foreign key ', k.constraint_name, ': ', k.table_name, '.', \
             k.column_name, ' -> ', k.referenced_table_name, '.', k.referenced_column_name, \
             ' on delete ', r.delete_rule, ' on update ', r.update_rule) \
             FROM information_schema.key_column_usage k \
             JOIN information_schema.referential_constraints r \
             ON r.constraint_schema = k.constraint_schema \
             AND r.constraint_name = k.constraint_name \
             WHERE k.table_schema = DATABASE() AND k.referenced_table_name IS NOT NULL \
             UNION ALL SELECT CONCAT('check ', constraint_name, ': ', check_clause) \
             FROM information_schema.check_constraints \
             WHERE constraint_schema = DATABASE() \
             UNION ALL SELECT CONCAT('trigger ', event_object_table, ' ', trigger_name, ' ', \
             action_timing, ' ', event_manipulation, ': ', MD5(action_statement)) \
             FROM information_schema.triggers WHERE trigger_schema = DATABASE() \
             ORDER BY 1"
        }
    };
    db.query_all_raw(Statement::from_string(backend, sql))
        .await
        .unwrap_or_else(|e| panic!("cannot read the schema: {e}"))
        .iter()
        .map(|row| row.try_get::<String>("", "line").unwrap())
        .collect()
}

/// The applied migrations, by version.
pub async fn applied_migrations(db: &impl ConnectionTrait) -> Vec<String> {
    let backend = db.get_database_backend();
    db.query_all_raw(Statement::from_string(
        backend,
        "SELECT version FROM seaql_migrations ORDER BY version",
    ))
    .await
    .unwrap_or_else(|e| panic!("cannot read the applied migrations: {e}"))
    .iter()
    .map(|row| row.try_get::<String>("", "version").unwrap())
    .collect()
}
