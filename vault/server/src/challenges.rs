//! Single-use release challenges: issued by `POST /v1/challenge`, consumed by the first release
//! attempt that names them, whatever its outcome.
//!
//! Two stores, one behaviour:
//!
//! - **memory** (the default): one vault process owns its challenges. Nothing touches the
//!   database on the release path, and a restart forgets every outstanding challenge, so none can
//!   be used twice across a crash either (workers ask for a new one).
//! - **database**: the `challenges` table, for replicas that share one database (a challenge
//!   issued by one may be consumed by another). The delete that consumes a row is the single-use
//!   guarantee; expired rows are swept as new ones are issued.
//!
//! Either way the log is the last word: a nonce already recorded in a release decision is refused
//! by the log's state machine even if a store forgot it.

use std::collections::HashMap;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::Pool;

/// Which store holds the challenges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChallengeStore {
    /// In the vault process (one vault per database: the embedded default).
    #[default]
    Memory,
    /// In the database (replicas sharing one PostgreSQL).
    Database,
}

/// An issued challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// The tenant it was issued for.
    pub tenant: String,
    /// The job it was issued for.
    pub job: String,
    /// The principal it was issued to.
    pub principal: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Why a challenge could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Too many unexpired challenges are outstanding.
    #[error("{0} challenges are outstanding; retry when some have been used or have expired")]
    Full(usize),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// How long an expired challenge is still remembered, so that a late worker is told "expired"
/// rather than "unknown".
pub const REMEMBER_EXPIRED_SECS: u64 = 600;

/// The most unexpired challenges held in memory at once (some 150 bytes each): an 18,000-GPU
/// fleet attesting at once needs 2,250, one per node.
pub const MAX_OUTSTANDING: usize = 100_000;

/// The challenge store.
#[derive(Debug)]
pub enum Challenges {
    /// In memory: nonce → issued, with the size at which expired entries are next swept.
    Memory(Mutex<(HashMap<[u8; 32], Issued>, usize)>),
    /// In the database.
    Database(Pool),
}

impl Challenges {
    /// A store of the given kind (`pool` is used by the database store).
    pub fn new(kind: ChallengeStore, pool: &Pool) -> Self {
        match kind {
            ChallengeStore::Memory => Challenges::Memory(Mutex::new((HashMap::new(), 1024))),
            ChallengeStore::Database => Challenges::Database(pool.clone()),
        }
    }

    /// Records `nonce` as issued (`now`: Unix seconds, for sweeping expired ones).
    pub async fn issue(&self, nonce: [u8; 32], issued: Issued, now: u64) -> Result<(), IssueError> {
        match self {
            Challenges::Memory(m) => {
                let mut guard = m.lock();
                let (map, sweep_at) = &mut *guard;
                if map.len() >= *sweep_at {
                    map.retain(|_, i| i.expires_at + REMEMBER_EXPIRED_SECS >= now);
                    *sweep_at = (map.len() * 2).max(1024);
                }
                if map.len() >= MAX_OUTSTANDING {
                    return Err(IssueError::Full(map.len()));
                }
                map.insert(nonce, issued);
                Ok(())
            }
            Challenges::Database(pool) => {
                // Expired rows go as new ones come (cheap with the primary key; bounded work).
                sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
                    .bind(crate::db::q::n(now.saturating_sub(REMEMBER_EXPIRED_SECS)))
                    .execute(pool)
                    .await?;
                sqlx::query(
                    "INSERT INTO challenges (nonce, tenant, job, principal, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(hex::encode(nonce))
                .bind(&issued.tenant)
                .bind(&issued.job)
                .bind(&issued.principal)
                .bind(crate::db::q::n(issued.expires_at))
                .execute(pool)
                .await?;
                Ok(())
            }
        }
    }

    /// Removes and returns the challenge `nonce`: exactly one caller ever gets it.
    pub async fn take(&self, nonce: &[u8; 32]) -> Result<Option<Issued>, sqlx::Error> {
        match self {
            Challenges::Memory(m) => Ok(m.lock().0.remove(nonce)),
            Challenges::Database(pool) => {
                let row =
                    sqlx::query("DELETE FROM challenges WHERE nonce = $1 RETURNING tenant, job, principal, expires_at")
                        .bind(hex::encode(nonce))
                        .fetch_optional(pool)
                        .await?;
                row.map(|row| {
                    Ok(Issued {
                        tenant: row.try_get("tenant")?,
                        job: row.try_get("job")?,
                        principal: row.try_get("principal")?,
                        expires_at: crate::db::q::u(&row, "expires_at").map_err(|e| sqlx::Error::Decode(e.0.into()))?,
                    })
                })
                .transpose()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, Pool) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::db::connect(&format!("sqlite://{}", dir.path().join("c.db").display())).await.unwrap();
        (dir, pool)
    }

    fn issued(expires_at: u64) -> Issued {
        Issued { tenant: "t".into(), job: "j".into(), principal: "p".into(), expires_at }
    }

    #[tokio::test]
    async fn a_challenge_is_taken_once() {
        let (_dir, pool) = pool().await;
        for kind in [ChallengeStore::Memory, ChallengeStore::Database] {
            let c = Challenges::new(kind, &pool);
            c.issue([1; 32], issued(100), 10).await.unwrap();
            // Expired, but recently: still known, so the denial can say "expired".
            c.issue([5; 32], issued(8), 10).await.unwrap();
            assert_eq!(c.take(&[5; 32]).await.unwrap(), Some(issued(8)), "{kind:?}");
            assert_eq!(c.take(&[1; 32]).await.unwrap(), Some(issued(100)), "{kind:?}");
            assert_eq!(c.take(&[1; 32]).await.unwrap(), None, "{kind:?}");
            assert_eq!(c.take(&[2; 32]).await.unwrap(), None, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn expired_challenges_are_swept_and_the_store_is_bounded() {
        let (_dir, pool) = pool().await;
        let c = Challenges::new(ChallengeStore::Memory, &pool);
        // 4,096 outstanding: the sweep mark doubles 1,024 → 2,048 → 4,096 while none has expired.
        for i in 0..4096u32 {
            let mut n = [0; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            c.issue(n, issued(5), 1).await.unwrap();
        }
        // All long expired by now: the next issue past the sweep mark clears them.
        let later = 6 + REMEMBER_EXPIRED_SECS;
        c.issue([9; 32], issued(later + 100), later).await.unwrap();
        let Challenges::Memory(m) = &c else { unreachable!() };
        assert_eq!(m.lock().0.len(), 1, "expired challenges were kept");
        assert!(c.take(&[9; 32]).await.unwrap().is_some());
        let db = Challenges::new(ChallengeStore::Database, &pool);
        db.issue([3; 32], issued(5), 1).await.unwrap();
        db.issue([4; 32], issued(later + 100), later).await.unwrap();
        assert_eq!(db.take(&[3; 32]).await.unwrap(), None, "an expired row survived the sweep");
    }
}
