//! The thread pool that seals and opens batches of chunks in parallel.

use crate::error::{Result, SealError};

/// How many threads chunk encryption may use. One thread runs inline with no pool at all.
pub struct Workers {
    pool: Option<rayon::ThreadPool>,
    threads: usize,
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Workers({})", self.threads)
    }
}

impl Workers {
    /// `threads == 0` means one per available core.
    pub fn new(threads: usize) -> Result<Self> {
        let threads = if threads == 0 { std::thread::available_parallelism().map_or(1, usize::from) } else { threads };
        if threads == 1 {
            return Ok(Self::sequential());
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("coffre-seal-{i}"))
            .build()
            .map_err(|e| SealError::InvalidArgument(format!("cannot start {threads} worker threads: {e}")))?;
        Ok(Self { pool: Some(pool), threads })
    }

    /// Everything on the calling thread.
    pub fn sequential() -> Self {
        Self { pool: None, threads: 1 }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(i)` for `i` in `0..n` over `items` pairs, in parallel when a pool exists, and
    /// returns the smallest `i` for which `f` returned `false`.
    pub(crate) fn first_failure<A, B, F>(&self, inputs: &[A], outputs: &mut [B], f: F) -> Option<usize>
    where
        A: Sync,
        B: Send,
        F: Fn(usize, &A, &mut B) -> bool + Sync + Send,
    {
        debug_assert_eq!(inputs.len(), outputs.len());
        match &self.pool {
            None => {
                inputs.iter().zip(outputs.iter_mut()).enumerate().find_map(|(i, (a, b))| (!f(i, a, b)).then_some(i))
            }
            Some(pool) => pool.install(|| {
                use rayon::prelude::*;
                inputs
                    .par_iter()
                    .zip(outputs.par_iter_mut())
                    .enumerate()
                    .with_min_len(4)
                    .filter_map(|(i, (a, b))| (!f(i, a, b)).then_some(i))
                    .min()
            }),
        }
    }
}
