//! One request's database handle: [`UnitOfWork`] holds its state, [`RequestDb`] is what
//! handlers use.

use std::{cell::Cell, future::Future, pin::Pin, rc::Rc, sync::Arc};

use futures_util::{StreamExt, stream::LocalBoxStream};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, Condition, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityTrait, FromQueryResult, IntoActiveModel,
    PrimaryKeyTrait, QueryFilter, QueryResult, QueryTrait, Select, Selector, SelectorRaw,
    SelectorTrait, Statement, TryIntoModel, prelude::DateTimeUtc,
};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

use super::{DbSource, Replica, Write, driver, error::is_unavailable, statements};

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
    replica_reads: Option<ReplicaReads>,
    /// Whether it wrote (its client gets the write position when it commits).
    wrote: Cell<bool>,
}

/// A read-only request's reads on the replica: whether they go there is decided at the first
/// read, once ([`Replica::serves`]); they run on a connection of the replica's pool.
struct ReplicaReads {
    replica: Arc<Replica>,
    /// The client's last write position, from its cookie.
    written: Option<u64>,
    chosen: Cell<Option<bool>>,
    conn: driver::RequestConnection,
}

impl ReplicaReads {
    fn chosen(&self) -> bool {
        match self.chosen.get() {
            Some(chosen) => chosen,
            None => {
                let chosen = self.replica.serves(self.written).is_ok();
                self.chosen.set(Some(chosen));
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
            replica_reads: None,
            wrote: Cell::new(false),
        }
    }

    /// A request that only reads: its reads may run on `replica`, if that has replayed the
    /// client's last write (`written`) — see `replica.rs`.
    pub fn reading(source: DbSource, replica: Arc<Replica>, written: Option<u64>) -> Self {
        let mut uow = Self::new(source);
        uow.replica_reads = Some(ReplicaReads {
            replica,
            written,
            chosen: Cell::new(None),
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
    fn replica(&self) -> Option<&ReplicaReads> {
        self.replica_reads.as_ref().filter(|reads| reads.chosen())
    }

    /// A read on the replica failed for want of a connection: the rest of the request reads
    /// on the primary.
    fn replica_failed(&self) {
        if let Some(reads) = &self.replica_reads {
            reads.replica.failed();
            reads.chosen.set(Some(false));
        }
    }

    /// Settle the request: give its connection back to the pool, and settle its
    /// transaction, if it began one: commit when `commit`, else roll back. The writer-gate
    /// turn is released after the commit or rollback.
    pub async fn finish(&self, commit: bool) -> Result<(), DbErr> {
        self.conn.release().await;
        if let Some(reads) = &self.replica_reads {
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
///
/// Whatever the request's transaction style, a handler reads and writes through these
/// methods; where each statement runs (the pool, the replica, the request's transaction) is
/// decided here, per statement ([`RequestDb::target`]).
#[derive(Clone)]
pub struct RequestDb(Rc<UnitOfWork>);

/// The request's transaction, borrowed: run SeaORM statements on it with `&*txn`.
pub type Transaction<'a> = MappedMutexGuard<'a, DatabaseTransaction>;

/// Where a statement runs: a pooled connection in autocommit, through the fast executor
/// ([`driver`]), or the request's transaction, through SeaORM's executor (boxed, see
/// [`boxed`]).
enum Target<'a> {
    /// The request's connection of `pool` — the primary's, or the replica's for a read-only
    /// request (`replica`) — outside any transaction.
    Pool {
        pool: &'a DatabaseConnection,
        conn: &'a driver::RequestConnection,
        replica: bool,
    },
    /// The request's transaction.
    Transaction(Transaction<'a>),
}

impl Target<'_> {
    fn backend(&self) -> DbBackend {
        match self {
            Self::Pool { pool, .. } => pool.get_database_backend(),
            Self::Transaction(txn) => ConnectionTrait::get_database_backend(&**txn),
        }
    }

    async fn query_one(&self, statement: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self {
            Self::Pool { pool, conn, .. } => conn.first(pool, statement).await,
            Self::Transaction(txn) => boxed(txn.query_one_raw(statement)).await,
        }
    }

    async fn query_all(&self, statement: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self {
            Self::Pool { pool, conn, .. } => conn.all(pool, statement).await,
            Self::Transaction(txn) => boxed(txn.query_all_raw(statement)).await,
        }
    }

    async fn execute(&self, statement: Statement) -> Result<u64, DbErr> {
        match self {
            Self::Pool { pool, conn, .. } => conn.execute(pool, statement).await,
            Self::Transaction(txn) => Ok(boxed(txn.execute_raw(statement)).await?.rows_affected()),
        }
    }

    /// The entity's `before_save` (`insert`: for an insert), on this target's connection.
    async fn before_save<A>(&self, model: A, insert: bool) -> Result<A, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send,
    {
        match self {
            Self::Pool { pool, .. } => boxed(model.before_save(*pool, insert)).await,
            Self::Transaction(txn) => boxed(model.before_save(&**txn, insert)).await,
        }
    }

    /// `ActiveModel::insert` as SeaORM does it (for a backend without `RETURNING`).
    async fn insert<A>(&self, model: A) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        match self {
            // SeaORM inserts on a connection of its own: the request's goes back first, so
            // the request never holds two.
            Self::Pool { pool, conn, .. } => {
                conn.release().await;
                boxed(model.insert(*pool)).await
            }
            Self::Transaction(txn) => boxed(model.insert(&**txn)).await,
        }
    }

    /// `INSERT … RETURNING` every column: what `ActiveModel::insert` does (the entity's
    /// `before_save`, the insert, `after_save`), with the SQL built once (`statements.rs`) and
    /// the result read to its end — in autocommit the statement commits when it completes, and
    /// the MySQL and SQLite drivers hand over a first row before that (a 201 could go out for
    /// a row not yet committed; SQLite runs its WAL checkpoint only from a statement that
    /// steps to its end).
    async fn insert_returning<A>(
        &self,
        model: A,
    ) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let model = self.before_save(model, true).await?;
        let rows = self
            .query_all(statements::insert_returning(self.backend(), model))
            .await?;
        let row = rows.first().ok_or(DbErr::RecordNotInserted)?;
        let stored = <A::Entity as EntityTrait>::Model::from_query_result(row, "")?;
        match self {
            Self::Pool { pool, .. } => boxed(A::after_save(stored, *pool, true)).await,
            Self::Transaction(txn) => boxed(A::after_save(stored, &**txn, true)).await,
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
            .read(statement, async |target, statement| {
                target.query_one(statement).await
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
        query: impl AsyncFn(&Target<'_>, Statement) -> Result<T, DbErr>,
    ) -> Result<T, DbErr> {
        let target = self.target(Access::Read).await?;
        if !matches!(target, Target::Pool { replica: true, .. }) {
            return query(&target, statement).await;
        }
        match query(&target, statement.clone()).await {
            Err(error) if is_unavailable(&error) => {
                drop(target);
                self.0.replica_failed();
                let target = self.target(Access::Read).await?;
                query(&target, statement).await
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
        let row = target
            .query_one(statements::signed_in_user(target.backend(), digest, now))
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
            .read(statement, async |target, statement| {
                target.query_all(statement).await
            })
            .await?;
        rows.into_iter().map(Q::decode).collect()
    }

    /// Every row `select` finds, decoded as by [`RequestDb::all`] and streamed on the
    /// request's connection, which the stream takes over (the stream outlives the handler:
    /// it is the response body). The connection counts in the pool's budget and is released
    /// after the last row, or closed when the stream is dropped midway.
    pub fn stream<Q: Rows + 'static>(
        &self,
        select: Q,
    ) -> LocalBoxStream<'static, Result<Q::Item, DbErr>> {
        let statement = select.statement(self.backend());
        let rows = match self.0.replica() {
            Some(reads) => driver::stream(reads.replica.pool(), reads.conn.take(), statement),
            None => driver::stream(&self.0.source.pool, self.0.conn.take(), statement),
        };
        rows.map(|row| Q::decode(row?)).boxed_local()
    }

    /// Insert `model` (after its entity's rules ran) and return the stored row.
    ///
    /// A request whose only write is this insert runs it in autocommit: one statement is
    /// atomic, and it saves the `BEGIN` and `COMMIT` round trips. Call it as the handler's
    /// last fallible step: an autocommitted row is not undone by an error after it. In a
    /// request that began its transaction (any style), the insert joins it.
    pub async fn insert<A>(&self, model: A) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
    where
        A: ActiveModelTrait + ActiveModelBehavior + Send + 'static,
        <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
    {
        let target = self.target(Access::Write).await?;
        if target.backend().support_returning() {
            target.insert_returning(model).await
        } else {
            // MySQL: SeaORM inserts, then reads the row back by its id.
            target.insert(model).await
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
        let model = target.before_save(model, false).await?;
        let update = A::Entity::update_many()
            .set(model.clone())
            .filter(condition);
        if target.execute(update.build(target.backend())).await? == 0 {
            return Ok(None);
        }
        model.try_into_model().map(Some)
    }

    /// Run one statement (a delete, an update or an insert built from an entity) as the
    /// request's write, in autocommit when it is the only one (see [`RequestDb::insert`]);
    /// the number of rows it affected.
    pub async fn execute<Q: QueryTrait>(&self, statement: Q) -> Result<u64, DbErr> {
        let target = self.target(Access::Write).await?;
        target.execute(statement.build(target.backend())).await
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
        self.0.source.pool.get_database_backend()
    }

    /// The request's transaction, begun on first use, for SeaORM statements this handle has
    /// no method for (a batch insert, a locking read). Whatever the style, the request has
    /// one transaction: the middleware commits it when the response status is below 400 and
    /// rolls it back otherwise, unless [`RequestDb::scoped`] or [`RequestDb::begin`] settled
    /// it first. Drop it before the next call on this handle.
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
    /// response is ready. `work` reads and writes through this same handle.
    pub async fn scoped<T, E>(&self, work: impl AsyncFnOnce(&Self) -> Result<T, E>) -> Result<T, E>
    where
        E: From<DbErr>,
    {
        drop(self.transaction().await?);
        let outcome = work(self).await;
        self.0.finish(outcome.is_ok()).await?;
        outcome
    }

    /// Explicit style: begin the request's transaction now; the handler commits or rolls it
    /// back itself ([`Begun::commit`], [`Begun::rollback`]), reading and writing through this
    /// same handle meanwhile. Not settling it leaves it to the middleware, by status.
    pub async fn begin(&self) -> Result<Begun<'_>, DbErr> {
        drop(self.transaction().await?);
        Ok(Begun(self))
    }

    /// Where a statement runs. Once the request has its transaction, everything runs in it;
    /// until then a write runs in autocommit on the pool, and so does a read — on the
    /// replica's pool, when the request only reads and the replica is fit.
    async fn target(&self, access: Access) -> Result<Target<'_>, DbErr> {
        if access == Access::Write {
            self.0.wrote.set(true);
        }
        let slot = self.0.txn.try_lock().map_err(|_| {
            DbErr::Custom("the request's transaction is borrowed: drop it first".into())
        })?;
        if slot.is_some() {
            return Ok(Target::Transaction(MutexGuard::map(slot, |write| {
                &mut write.as_mut().expect("checked above").txn
            })));
        }
        Ok(match self.0.replica() {
            Some(reads) if access == Access::Read => Target::Pool {
                pool: reads.replica.pool(),
                conn: &reads.conn,
                replica: true,
            },
            _ => Target::Pool {
                pool: &self.0.source.pool,
                conn: &self.0.conn,
                replica: false,
            },
        })
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

/// A raw statement's rows (`M::find_by_statement(statement)`): what `M` decodes them into.
impl<S: SelectorTrait> Rows for SelectorRaw<S> {
    type Item = S::Item;

    fn statement(self, _: DbBackend) -> Statement {
        self.into_statement()
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
pub struct Begun<'a>(&'a RequestDb);

impl Begun<'_> {
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
