//! One request's database handle: [`UnitOfWork`] holds its state, [`RequestDb`] is what
//! handlers use.

use std::{cell::Cell, future::Future, pin::Pin, rc::Rc, sync::Arc};

use futures_util::{StreamExt, stream::LocalBoxStream};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, IntoActiveModel,
    PrimaryKeyTrait, QueryFilter, QueryResult, QueryTrait, Select, Selector, SelectorTrait,
    Statement, StreamTrait as _, TryIntoModel, prelude::DateTimeUtc,
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::{DbSource, Replica, Write, driver, statements};

/// One request's database state: its source and, once a handler wrote, its transaction.
///
/// Nothing touches the pool until a handler asks. The connection returns to the pool on every
/// path: after [`UnitOfWork::finish`], or, when the request is dropped before (client gone,
/// server stopping), by a rollback task spawned from `Drop`.
pub struct UnitOfWork {
    source: DbSource,
    /// The connection its statements outside a transaction run on.
    conn: driver::RequestConnection,
    txn: Mutex<Option<Write>>,
    /// Where a request that only reads may read instead of the primary.
    reads: Option<ReplicaReads>,
    /// Whether it wrote (its client gets the write position when it commits).
    wrote: Cell<bool>,
}

/// A read-only request's reads on the replica: whether they go there is decided at the first
/// read, once ([`Replica::serves`]); they run on a connection of the replica's pool.
struct ReplicaReads {
    replica: Arc<Replica>,
    /// The client's last write position, from its cookie.
    written: Option<u64>,
    use_it: Cell<Option<bool>>,
    conn: driver::RequestConnection,
}

impl ReplicaReads {
    fn chosen(&self) -> bool {
        match self.use_it.get() {
            Some(chosen) => chosen,
            None => {
                let chosen = self.replica.serves(self.written).is_ok();
                self.use_it.set(Some(chosen));
                chosen
            }
        }
    }
}

impl UnitOfWork {
    pub fn new(source: DbSource) -> Self {
        Self {
            source,
            conn: driver::RequestConnection::default(),
            txn: Mutex::new(None),
            reads: None,
            wrote: Cell::new(false),
        }
    }

    /// A request that only reads: its reads may run on `replica`, if that has replayed the
    /// client's last write (`written`) — see `replica.rs`.
    pub fn reading(source: DbSource, replica: Arc<Replica>, written: Option<u64>) -> Self {
        let mut uow = Self::new(source);
        uow.reads = Some(ReplicaReads {
            replica,
            written,
            use_it: Cell::new(None),
            conn: driver::RequestConnection::default(),
        });
        uow
    }

    /// The primary's write position after this request's writes committed, for its client's
    /// cookie: `None` when it wrote nothing or there is no replica to compare it with.
    pub async fn written_position(&self) -> Option<u64> {
        if !self.wrote.get() {
            return None;
        }
        self.source.written_position().await
    }

    /// The replica, when this request's reads go there.
    fn replica_reads(&self) -> Option<&ReplicaReads> {
        self.reads.as_ref().filter(|reads| reads.chosen())
    }

    /// A read on the replica failed for want of a connection: the rest of the request reads
    /// on the primary.
    fn replica_failed(&self) {
        if let Some(reads) = &self.reads {
            reads.replica.failed();
            reads.use_it.set(Some(false));
        }
    }

    /// Settle the request: give its connection back to the pool, and settle its
    /// transaction, if it began one: commit when `commit`, else roll back. The writer-gate
    /// turn is released after the commit or rollback.
    pub async fn finish(&self, commit: bool) -> Result<(), DbErr> {
        self.conn.release().await;
        if let Some(reads) = &self.reads {
            reads.conn.release().await;
        }
        let Some(write) = self.txn.lock().await.take() else {
            return Ok(());
        };
        if commit {
            boxed(write.txn.commit()).await
        } else {
            boxed(write.txn.rollback()).await
        }
    }
}

impl Drop for UnitOfWork {
    /// Reached with a transaction only when the request was dropped before the middleware
    /// settled it. SeaORM's own `Drop` would panic if the transaction were still borrowed, so
    /// roll back explicitly on a task instead.
    fn drop(&mut self) {
        let Some(write) = self.txn.get_mut().take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if let Err(error) = write.txn.rollback().await {
                        tracing::warn!(%error, "rollback of an abandoned request failed");
                    }
                });
            }
            // No runtime left: dropping queues the rollback on the connection itself.
            Err(_) => drop(write),
        }
    }
}

/// The request's database handle (an extractor): every query a handler makes goes through it.
#[derive(Clone)]
pub struct RequestDb(Rc<UnitOfWork>);

/// The request's transaction, borrowed: run SeaORM statements on it with `&*txn`.
pub type Transaction<'a> = MappedMutexGuard<'a, DatabaseTransaction>;

/// Where a statement runs, decided per call.
enum Target<'a> {
    /// The request's connection from the pool, outside any transaction (autocommit).
    Pool(&'a DatabaseConnection, &'a driver::RequestConnection),
    /// Its connection from the replica's pool (a read-only request).
    Replica(&'a DatabaseConnection, &'a driver::RequestConnection),
    /// The request's transaction.
    Request(Transaction<'a>),
    /// The test's transaction, for a read in rollback mode.
    Pinned(&'a DatabaseTransaction),
}

impl Target<'_> {
    fn is_replica(&self) -> bool {
        matches!(self, Self::Replica(..))
    }

    fn on(&self) -> On<'_> {
        match self {
            Self::Pool(pool, conn) | Self::Replica(pool, conn) => On::Pool(pool, conn),
            Self::Request(txn) => On::Transaction(txn),
            Self::Pinned(txn) => On::Transaction(txn),
        }
    }
}

/// A connection to run statements on: the request's own, through the fast executor
/// ([`driver`]), or a transaction, through SeaORM's executor (boxed, see [`boxed`]).
#[derive(Clone, Copy)]
enum On<'a> {
    Pool(&'a DatabaseConnection, &'a driver::RequestConnection),
    Transaction(&'a DatabaseTransaction),
}

impl On<'_> {
    fn backend(self) -> DbBackend {
        match self {
            Self::Pool(pool, _) => pool.get_database_backend(),
            Self::Transaction(txn) => ConnectionTrait::get_database_backend(txn),
        }
    }

    async fn query_one(self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool(pool, conn) => conn.first(pool, statement).await,
            Self::Transaction(txn) => boxed(txn.query_one_raw(statement)).await,
        }
    }

    async fn query_all(self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool(pool, conn) => conn.all(pool, statement).await,
            Self::Transaction(txn) => boxed(txn.query_all_raw(statement)).await,
        }
    }

    async fn execute(self, statement: Statement) -> Result<u64, DbErr> {
        match self {
            Self::Pool(pool, conn) => conn.execute(pool, statement).await,
            Self::Transaction(txn) => Ok(boxed(txn.execute_raw(statement)).await?.rows_affected()),
        }
    }

    /// `ActiveModel::insert`, for a backend without `RETURNING`.
    async fn insert<A>(self, model: A) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        match self {
            // SeaORM inserts on a connection of its own: the request's goes back first, so
            // the request never holds two.
            Self::Pool(pool, conn) => {
                conn.release().await;
                boxed(model.insert(pool)).await
            }
            Self::Transaction(txn) => boxed(model.insert(txn)).await,
        }
    }
}

impl RequestDb {
    pub fn new(uow: Rc<UnitOfWork>) -> Self {
        Self(uow)
    }

    /// The model with primary key `id`, if any: `E::find_by_id(id)`, with its SQL built once
    /// (see `statements.rs`).
    pub async fn find_by_id<E: EntityTrait>(
        &self,
        id: <E::PrimaryKey as PrimaryKeyTrait>::ValueType,
    ) -> Result<Option<E::Model>, DbErr> {
        let statement = statements::find_by_id::<E>(self.backend(), id);
        let row = self
            .read(statement, async |on, statement| {
                on.query_one(statement).await
            })
            .await?;
        row.map(|row| E::Model::from_query_result(&row, ""))
            .transpose()
    }

    /// Run the read `query` with `statement` where the request reads (see
    /// [`RequestDb::target`]); on the replica, a failure for want of a connection runs it
    /// again on the primary.
    async fn read<T>(
        &self,
        statement: Statement,
        query: impl AsyncFn(On<'_>, Statement) -> Result<T, DbErr>,
    ) -> Result<T, DbErr> {
        let target = self.target(Access::Read).await?;
        if !target.is_replica() {
            return query(target.on(), statement).await;
        }
        match query(target.on(), statement.clone()).await {
            Err(error) if crate::http::error::is_unavailable(&error) => {
                drop(target);
                self.0.replica_failed();
                let target = self.target(Access::Read).await?;
                query(target.on(), statement).await
            }
            done => done,
        }
    }

    /// The user bearer-token `digest` signs in at `now`, if any: [`entity::session::find_user`],
    /// with its SQL built once (every signed-in request makes this lookup).
    pub async fn signed_in_user(
        &self,
        digest: &str,
        now: DateTimeUtc,
    ) -> Result<Option<entity::user::Model>, DbErr> {
        // On the primary: a revoked token must be refused at once, however far the replica lags.
        let target = self.target(Access::Primary).await?;
        let on = target.on();
        let row = on
            .query_one(statements::signed_in_user(on.backend(), digest, now))
            .await?;
        row.map(|row| entity::user::Model::from_query_result(&row, ""))
            .transpose()
    }

    /// Every row `select` finds, decoded: an entity's `Select` gives its models; a
    /// `Selector` (`select.into_model::<M>()`, or a view such as [`entity::note::Listed`])
    /// gives what it decodes into.
    pub async fn all<Q: Rows>(&self, select: Q) -> Result<Vec<Q::Item>, DbErr> {
        let statement = select.statement(self.backend());
        let rows = self
            .read(statement, async |on, statement| {
                on.query_all(statement).await
            })
            .await?;
        rows.into_iter().map(Q::decode).collect()
    }

    /// Every row `select` finds, decoded as by [`RequestDb::all`] and streamed on the
    /// request's connection, which the stream takes over (the stream outlives the handler:
    /// it is the response body).
    ///
    /// On the pool the connection counts in the pool's budget and is released after the last
    /// row, or closed when the stream is dropped midway. Pinned to a test's transaction, the
    /// rows stream from that transaction.
    pub fn stream<Q: Rows + 'static>(
        &self,
        select: Q,
    ) -> LocalBoxStream<'static, Result<Q::Item, DbErr>> {
        let rows = match &self.0.source {
            DbSource::Pool(pool, ..) => {
                let statement = select.statement(pool.get_database_backend());
                match self.0.replica_reads() {
                    Some(reads) => {
                        driver::stream(reads.replica.pool(), reads.conn.take(), statement)
                    }
                    None => driver::stream(pool, self.0.conn.take(), statement),
                }
            }
            DbSource::Pinned(txn) => {
                let txn = txn.clone();
                let statement = select.statement(ConnectionTrait::get_database_backend(&*txn));
                async_stream::try_stream! {
                    let mut rows = txn.stream_raw(statement).await?;
                    while let Some(row) = rows.next().await {
                        yield row?;
                    }
                }
                .boxed_local()
            }
        };
        rows.map(|row| Q::decode(row?)).boxed_local()
    }

    /// Insert `model` (after its entity's rules ran) and return the stored row.
    ///
    /// A request whose only write is this insert runs it in autocommit: one statement is
    /// atomic, and it saves the `BEGIN` and `COMMIT` round trips. Call it as the handler's
    /// last fallible step: an autocommitted row is not undone by an error after it. In a
    /// request that already began its transaction, the insert joins it.
    pub async fn insert<A>(&self, model: A) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let target = self.target(Access::Write).await?;
        let on = target.on();
        if on.backend().support_returning() {
            insert_returning(on, model).await
        } else {
            // MySQL: SeaORM inserts, then reads the row back by its id.
            on.insert(model).await
        }
    }

    /// Save the changes of `model` — a row read earlier, changed since — only where the row
    /// still matches `condition` (its id and the version it was read at, say): one
    /// `UPDATE … SET <changed columns> WHERE <condition>` after the entity's rules ran
    /// (`before_save`), in autocommit unless the request has its transaction. The saved
    /// model, or `None` when no row matched (the row changed or went away meanwhile).
    ///
    /// The condition is checked by the write itself, so nothing can slip in between.
    pub async fn update_where<A>(
        &self,
        model: A,
        condition: Condition,
    ) -> Result<Option<<A::Entity as EntityTrait>::Model>, DbErr>
    where
        A: ActiveModelTrait
            + ActiveModelBehavior
            + TryIntoModel<<A::Entity as EntityTrait>::Model>
            + Send
            + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let target = self.target(Access::Write).await?;
        let on = target.on();
        let model = match on {
            On::Pool(pool, _) => boxed(model.before_save(pool, false)).await?,
            On::Transaction(txn) => boxed(model.before_save(txn, false)).await?,
        };
        let update = A::Entity::update_many()
            .set(model.clone())
            .filter(condition);
        if on.execute(update.build(on.backend())).await? == 0 {
            return Ok(None);
        }
        model.try_into_model().map(Some)
    }

    /// Run `work` — slow, and without the database (password hashing) — with the request's
    /// connection back in the pool meanwhile, so that requests waiting for a hashing slot do
    /// not hold the pool. The next statement takes a connection again.
    pub async fn without_connection<T>(&self, work: impl Future<Output = T>) -> T {
        self.0.conn.release().await;
        work.await
    }

    /// The database's backend.
    pub fn backend(&self) -> DbBackend {
        match &self.0.source {
            DbSource::Pool(pool, ..) => pool.get_database_backend(),
            DbSource::Pinned(txn) => ConnectionTrait::get_database_backend(&**txn),
        }
    }

    /// Run one statement (a delete or an update built from an entity) as the request's
    /// write, in autocommit when it is the only one (see [`RequestDb::insert`]); the number of
    /// rows it affected.
    pub async fn execute<Q: QueryTrait>(&self, statement: Q) -> Result<u64, DbErr> {
        let target = self.target(Access::Write).await?;
        let on = target.on();
        on.execute(statement.build(on.backend())).await
    }

    /// The request's transaction, begun on first use, for a write of several statements.
    /// The middleware commits it when the response status is below 400 and rolls it back
    /// otherwise. While a handler holds it, it queries through it.
    pub async fn transaction(&self) -> Result<Transaction<'_>, DbErr> {
        self.0.wrote.set(true);
        let mut slot = self.0.txn.lock().await;
        if slot.is_none() {
            // The transaction takes a connection of its own: the one the request read on so
            // far goes back first, so the request never holds two.
            self.0.conn.release().await;
            *slot = Some(boxed(self.0.source.begin_write()).await?);
        }
        Ok(MutexGuard::map(slot, |write| {
            &mut write
                .as_mut()
                .expect("the transaction was set just above")
                .txn
        }))
    }

    /// Scoped style: run `work` in the request's transaction and settle it as soon as `work`
    /// returns — committed when it succeeds, rolled back when it fails — rather than when the
    /// response is ready. For a write whose outcome the handler must know before it builds
    /// its answer (`POST /notes/bulk`: every row or none, committed before thousands of rows
    /// are serialised, so SQLite's write lock is not held meanwhile).
    pub async fn scoped<T, E>(
        &self,
        work: impl AsyncFnOnce(&DatabaseTransaction) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<DbErr>,
    {
        let outcome = work(&*self.transaction().await?).await;
        self.0.finish(outcome.is_ok()).await?;
        outcome
    }

    /// Explicit style: the request's transaction, which the handler commits or rolls back
    /// itself ([`Explicit::commit`], [`Explicit::rollback`]), for a change of several steps
    /// that must undo itself when a later step fails. Not settling it leaves it to the
    /// middleware, by status.
    pub async fn begin(&self) -> Result<Explicit<'_>, DbErr> {
        drop(self.transaction().await?);
        Ok(Explicit(self))
    }

    /// Where a statement runs. A write with no transaction yet runs in autocommit on the
    /// pool; so does a read — on the replica's pool, when the request only reads and the
    /// replica is fit. Once the request has its transaction, everything runs in it.
    async fn target(&self, access: Access) -> Result<Target<'_>, DbErr> {
        let write = access == Access::Write;
        if write {
            self.0.wrote.set(true);
        }
        let pool = match &self.0.source {
            DbSource::Pool(pool, ..) => pool,
            DbSource::Pinned(txn) if !write => return Ok(Target::Pinned(txn)),
            // In rollback mode a failed statement must not abort the test's transaction: a
            // write runs in the request's own (a savepoint).
            DbSource::Pinned(_) => return self.transaction().await.map(Target::Request),
        };
        match self.0.txn.try_lock() {
            Ok(slot) if slot.is_none() => Ok(match self.0.replica_reads() {
                Some(reads) if access == Access::Read => {
                    Target::Replica(reads.replica.pool(), &reads.conn)
                }
                _ => Target::Pool(pool, &self.0.conn),
            }),
            Ok(slot) => Ok(Target::Request(MutexGuard::map(slot, |write| {
                &mut write.as_mut().expect("checked above").txn
            }))),
            Err(_) => Err(DbErr::Custom(
                "the request's transaction is borrowed: query through it".into(),
            )),
        }
    }
}

/// What [`RequestDb::all`] and [`RequestDb::stream`] take: a SeaORM select, built into its
/// statement for the backend, and the decoder of its rows — SeaORM's `FromQueryResult`.
pub trait Rows {
    /// What a row decodes into.
    type Item;

    /// The statement, built for `backend`.
    fn statement(self, backend: DbBackend) -> Statement;

    /// One row, decoded.
    fn decode(row: QueryResult) -> Result<Self::Item, DbErr>;
}

/// An entity's select: its models (their derived `FromQueryResult`, by column name).
impl<E: EntityTrait> Rows for Select<E> {
    type Item = E::Model;

    fn statement(self, backend: DbBackend) -> Statement {
        self.build(backend)
    }

    fn decode(row: QueryResult) -> Result<E::Model, DbErr> {
        E::Model::from_query_result(&row, "")
    }
}

/// `select.into_model::<M>()` and the like: what the selector decodes its rows into
/// (`M`'s `FromQueryResult`).
impl<S: SelectorTrait> Rows for Selector<S> {
    type Item = S::Item;

    fn statement(self, backend: DbBackend) -> Statement {
        self.into_statement(backend)
    }

    fn decode(row: QueryResult) -> Result<S::Item, DbErr> {
        S::from_raw_query_result(row)
    }
}

/// What a statement does, for [`RequestDb::target`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Reads what a read-only request may read on the replica.
    Read,
    /// Reads what must be current (the sign-in lookup): on the primary.
    Primary,
    /// Writes.
    Write,
}

/// The request's transaction in the explicit style: see [`RequestDb::begin`].
pub struct Explicit<'a>(&'a RequestDb);

impl Explicit<'_> {
    /// The transaction, to run statements on (`&*txn`).
    pub async fn get(&self) -> Result<Transaction<'_>, DbErr> {
        self.0.transaction().await
    }

    /// Commit now.
    pub async fn commit(self) -> Result<(), DbErr> {
        self.0.0.finish(true).await
    }

    /// Roll back now.
    pub async fn rollback(self) -> Result<(), DbErr> {
        self.0.0.finish(false).await
    }
}

/// SeaORM's executor futures, boxed: an `async fn` is as large as the largest future it
/// awaits, and SeaORM's are kilobytes, so every handler future that awaited one inline would
/// be as large even on the paths that never take it (bench/PERFORMANCE.md, "boxing").
fn boxed<'a, T>(future: impl Future<Output = T> + 'a) -> Pin<Box<dyn Future<Output = T> + 'a>> {
    Box::pin(future)
}

/// `INSERT … RETURNING` every column: what `ActiveModel::insert` does (the entity's
/// `before_save`, the insert, `after_save`), with the SQL built once (`statements.rs`) and
/// the result read to its end — in autocommit the statement commits when it completes, and
/// the MySQL and SQLite drivers hand over a first row before that (a 201 could go out for a
/// row not yet committed; SQLite runs its WAL checkpoint only from a statement that steps to
/// its end).
async fn insert_returning<A>(
    on: On<'_>,
    model: A,
) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
where
    A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    let model = match on {
        On::Pool(pool, _) => boxed(model.before_save(pool, true)).await?,
        On::Transaction(txn) => boxed(model.before_save(txn, true)).await?,
    };
    let rows = on
        .query_all(statements::insert_returning(on.backend(), model))
        .await?;
    let row = rows.first().ok_or(DbErr::RecordNotInserted)?;
    let stored = <A::Entity as EntityTrait>::Model::from_query_result(row, "")?;
    match on {
        On::Pool(pool, _) => boxed(A::after_save(stored, pool, true)).await,
        On::Transaction(txn) => boxed(A::after_save(stored, txn, true)).await,
    }
}
