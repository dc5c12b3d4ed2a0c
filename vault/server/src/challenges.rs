//! Single-use release challenges: issued by `POST /v1/challenge`, consumed by the first release
//! attempt that names them, whatever its outcome.
//!
//! Two stores, one behaviour:
//!
//! - **memory** (the default): one vault process owns its challenges. Nothing touches the
//!   database on the release path, and a restart forgets every outstanding challenge, so none can
//!   be used twice across a crash either (workers ask for a new one).
//! - **database**: the `challenges` table, for replicas that share one database (a challenge
//!   issued by one may be consumed by another): groundwork for the scale-out backend, whose log
//!   will still have a single writer. The delete that consumes a row is the single-use
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

/// The most challenges held at once (some 150 bytes each): an 18,000-GPU fleet attesting at once
/// needs 2,250, one per node.
pub const MAX_OUTSTANDING: usize = 100_000;
/// The most one principal may hold: no single worker-operator can fill the store for everyone.
pub const MAX_PER_PRINCIPAL: usize = 20_000;

/// The memory store: nonce → issued, each principal's count, and the size at which expired
/// entries are next swept.
#[derive(Debug, Default)]
pub struct Held {
    map: HashMap<[u8; 32], Issued>,
    per_principal: HashMap<String, usize>,
    sweep_at: usize,
}

impl Held {
    /// Drops challenges expired before `cutoff`, and recounts.
    fn sweep(&mut self, cutoff: u64) {
        self.map.retain(|_, i| i.expires_at >= cutoff);
        self.per_principal.clear();
        for i in self.map.values() {
            *self.per_principal.entry(i.principal.clone()).or_default() += 1;
        }
        self.sweep_at = (self.map.len() * 2).clamp(1024, MAX_OUTSTANDING);
    }

    fn full(&self, principal: &str) -> Option<usize> {
        let mine = self.per_principal.get(principal).copied().unwrap_or(0);
        if self.map.len() >= MAX_OUTSTANDING {
            Some(self.map.len())
        } else if mine >= MAX_PER_PRINCIPAL {
            Some(mine)
        } else {
            None
        }
    }
}

/// The challenge store.
#[derive(Debug)]
pub enum Challenges {
    /// In memory.
    Memory(Mutex<Held>),
    /// In the database.
    Database(Pool),
}

impl Challenges {
    /// A store of the given kind (`pool` is used by the database store).
    pub fn new(kind: ChallengeStore, pool: &Pool) -> Self {
        match kind {
            ChallengeStore::Memory => Challenges::Memory(Mutex::new(Held { sweep_at: 1024, ..Held::default() })),
            ChallengeStore::Database => Challenges::Database(pool.clone()),
        }
    }

    /// Records `nonce` as issued (`now`: Unix seconds, for sweeping expired ones). Refused when
    /// the store, or the principal's share of it, is full of unexpired challenges.
    pub async fn issue(&self, nonce: [u8; 32], issued: Issued, now: u64) -> Result<(), IssueError> {
        match self {
            Challenges::Memory(m) => {
                let mut held = m.lock();
                if held.map.len() >= held.sweep_at {
                    held.sweep(now.saturating_sub(REMEMBER_EXPIRED_SECS));
                }
                if held.full(&issued.principal).is_some() {
                    // Under pressure, expired challenges are forgotten at once (a late worker is
                    // then told "unknown" rather than "expired").
                    held.sweep(now);
                }
                if let Some(n) = held.full(&issued.principal) {
                    return Err(IssueError::Full(n));
                }
                *held.per_principal.entry(issued.principal.clone()).or_default() += 1;
                held.map.insert(nonce, issued);
                Ok(())
            }
            Challenges::Database(pool) => {
                // Expired rows go as new ones come (cheap with the primary key; bounded work).
                sqlx::query("DELETE FROM challenges WHERE expires_at < $1")
                    .bind(crate::db::q::n(now.saturating_sub(REMEMBER_EXPIRED_SECS)))
                    .execute(pool)
                    .await?;
                let all: i64 = sqlx::query("SELECT COUNT(*) FROM challenges").fetch_one(pool).await?.try_get(0)?;
                let mine: i64 = sqlx::query("SELECT COUNT(*) FROM challenges WHERE principal = $1")
                    .bind(&issued.principal)
                    .fetch_one(pool)
                    .await?
                    .try_get(0)?;
                let (all, mine) =
                    (usize::try_from(all).unwrap_or(usize::MAX), usize::try_from(mine).unwrap_or(usize::MAX));
                if all >= MAX_OUTSTANDING || mine >= MAX_PER_PRINCIPAL {
                    return Err(IssueError::Full(all.max(mine)));
                }
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

    /// Removes and returns the challenge `nonce` if it was issued to `principal`: exactly one
    /// caller ever gets it. Presented by anyone else it stays where it is (nobody can burn
    /// another's challenge).
    pub async fn take(&self, nonce: &[u8; 32], principal: &str) -> Result<Taken, sqlx::Error> {
        match self {
            Challenges::Memory(m) => {
                let mut held = m.lock();
                match held.map.get(nonce) {
                    None => return Ok(Taken::Unknown),
                    Some(i) if i.principal != principal => return Ok(Taken::NotYours),
                    Some(_) => {}
                }
                let Some(issued) = held.map.remove(nonce) else { return Ok(Taken::Unknown) };
                if let Some(n) = held.per_principal.get_mut(principal) {
                    *n = n.saturating_sub(1);
                }
                Ok(Taken::Yours(issued))
            }
            Challenges::Database(pool) => {
                let row = sqlx::query(
                    "DELETE FROM challenges WHERE nonce = $1 AND principal = $2 \
                     RETURNING tenant, job, principal, expires_at",
                )
                .bind(hex::encode(nonce))
                .bind(principal)
                .fetch_optional(pool)
                .await?;
                let Some(row) = row else {
                    let exists = sqlx::query("SELECT 1 FROM challenges WHERE nonce = $1")
                        .bind(hex::encode(nonce))
                        .fetch_optional(pool)
                        .await?
                        .is_some();
                    return Ok(if exists { Taken::NotYours } else { Taken::Unknown });
                };
                Ok(Taken::Yours(Issued {
                    tenant: row.try_get("tenant")?,
                    job: row.try_get("job")?,
                    principal: row.try_get("principal")?,
                    expires_at: crate::db::q::u(&row, "expires_at").map_err(|e| sqlx::Error::Decode(e.0.into()))?,
                }))
            }
        }
    }
}

/// What [`Challenges::take`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// Issued to this principal, and now consumed.
    Yours(Issued),
    /// Never issued, already used, or long expired.
    Unknown,
    /// Issued to another principal: left in place.
    NotYours,
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
            assert_eq!(c.take(&[5; 32], "p").await.unwrap(), Taken::Yours(issued(8)), "{kind:?}");
            // Another principal cannot take (or burn) it.
            assert_eq!(c.take(&[1; 32], "someone else").await.unwrap(), Taken::NotYours, "{kind:?}");
            assert_eq!(c.take(&[1; 32], "p").await.unwrap(), Taken::Yours(issued(100)), "{kind:?}");
            assert_eq!(c.take(&[1; 32], "p").await.unwrap(), Taken::Unknown, "{kind:?}");
            assert_eq!(c.take(&[2; 32], "p").await.unwrap(), Taken::Unknown, "{kind:?}");
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
        assert_eq!(m.lock().map.len(), 1, "expired challenges were kept");
        assert!(matches!(c.take(&[9; 32], "p").await.unwrap(), Taken::Yours(_)));
        let db = Challenges::new(ChallengeStore::Database, &pool);
        db.issue([3; 32], issued(5), 1).await.unwrap();
        db.issue([4; 32], issued(later + 100), later).await.unwrap();
        assert_eq!(db.take(&[3; 32], "p").await.unwrap(), Taken::Unknown, "an expired row survived the sweep");
    }

    #[tokio::test]
    async fn attack_one_principal_fills_the_challenge_store() {
        let (_dir, pool) = pool().await;
        let c = Challenges::new(ChallengeStore::Memory, &pool);
        let nonce = |i: u32| {
            let mut n = [0; 32];
            n[..4].copy_from_slice(&i.to_be_bytes());
            n
        };
        for i in 0..MAX_PER_PRINCIPAL as u32 {
            c.issue(nonce(i), issued(100), 10).await.unwrap();
        }
        // Its share is full; everyone else still gets challenges.
        assert!(matches!(c.issue(nonce(u32::MAX), issued(100), 10).await, Err(IssueError::Full(_))));
        let other = Issued { principal: "q".into(), ..issued(1000) };
        c.issue(nonce(u32::MAX - 1), other, 10).await.unwrap();
        // Once they expire, the principal is served again (expired ones are dropped at once).
        c.issue(nonce(u32::MAX), issued(300), 200).await.unwrap();
        let Challenges::Memory(m) = &c else { unreachable!() };
        assert_eq!(m.lock().map.len(), 2);
    }
}
