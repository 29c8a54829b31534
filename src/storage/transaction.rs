//! A transaction whose connection goes back to the pool only in a known
//! state.
//!
//! sqlx's own `begin_with` returns the connection to the pool when its
//! `BEGIN` statement fails after the `BEGIN` itself ran (a setting
//! refused, a cancel that lands mid-statement): the server is then inside
//! a transaction, or an aborted one, that sqlx does not know of, so it is
//! never rolled back, and every later call on that connection fails. Here
//! a connection whose begin or commit failed is closed, never reused; one
//! whose transaction is dropped unfinished is rolled back before its next
//! use (sqlx queues the `ROLLBACK`).

use std::ops::{Deref, DerefMut};

use sqlx::pool::PoolConnection;
use sqlx::postgres::PgTransactionManager;
use sqlx::{PgConnection, PgPool, Postgres, TransactionManager as _};

/// An open transaction on a pooled connection; rolled back when dropped
/// before [`Tx::commit`].
pub(crate) struct Tx {
    conn: PoolConnection<Postgres>,
    open: bool,
    /// Its places in its call's shares of the pool (`calls`), given back
    /// with the connection.
    _places: Option<super::calls::SharePlaces>,
}

impl Tx {
    /// Takes a connection from `pool` and runs `statement` on it, which
    /// must begin a transaction (a `begin; ...` simple query). When it
    /// fails, the connection is closed.
    ///
    /// A call's transaction first takes its places in the call's shares
    /// of the pool, waiting at most as long as the pool would.
    pub(super) async fn begin(pool: &PgPool, statement: String) -> Result<Self, sqlx::Error> {
        let places = super::calls::take_share_places(pool.options().get_acquire_timeout()).await?;
        let mut conn = pool.acquire().await?;
        if let Err(err) = PgTransactionManager::begin(&mut conn, Some(statement.into())).await {
            conn.close_on_drop();
            return Err(err);
        }
        Ok(Self {
            conn,
            open: true,
            _places: places,
        })
    }

    /// Commits. When the commit fails, the connection is closed: whether
    /// the server still holds the transaction is not known.
    pub(crate) async fn commit(mut self) -> Result<(), sqlx::Error> {
        let committed = PgTransactionManager::commit(&mut self.conn).await;
        if committed.is_err() {
            self.conn.close_on_drop();
        }
        // Either way nothing is left to roll back: a connection whose
        // commit failed is not reused.
        self.open = false;
        committed
    }

    /// Rolls back now (rather than before the connection's next use).
    pub(crate) async fn rollback(mut self) -> Result<(), sqlx::Error> {
        let rolled_back = PgTransactionManager::rollback(&mut self.conn).await;
        if rolled_back.is_err() {
            self.conn.close_on_drop();
        }
        self.open = false;
        rolled_back
    }
}

impl Tx {
    /// Ends the transaction by closing its connection, which is never
    /// reused: for a statement left unread, which the server would
    /// otherwise go on sending (to be read and thrown away) before the
    /// connection could serve anyone.
    pub(crate) fn abandon(mut self) {
        self.conn.close_on_drop();
        self.open = false;
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.open {
            PgTransactionManager::start_rollback(&mut self.conn);
        }
    }
}

impl Deref for Tx {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Tx {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
