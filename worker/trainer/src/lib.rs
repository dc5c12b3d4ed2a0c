//! `coffre-trainer`: fine-tunes Llama-architecture models in Rust — full fine-tuning, LoRA, and
//! DP-SGD with a Rényi-DP accountant — on plaintext record streams.
//!
//! The trainer never needs a file path for its data: [`data::read_records`] takes any
//! [`std::io::Read`], so the worker feeds it straight from a decrypting reader inside the
//! confidential VM. Base models load from Hugging Face safetensors directories or GGUF files;
//! outputs are safetensors that `transformers` and PEFT load.
//!
//! Built on candle's tensors and autograd, with our own model definition from differentiable
//! operations (see [`model`]).

use std::path::{Path, PathBuf};

pub mod config;
pub mod data;
pub mod dp;
pub mod lora;
pub mod model;
pub mod ops;
pub mod optim;
pub mod output;
pub mod tiny;
pub mod tokenizer;
pub mod train;
pub mod weights;

pub use candle_core::Device;
pub use config::LlamaConfig;
pub use lora::LoraSpec;
pub use model::{Llama, Mode};
pub use output::{Checkpoint, CheckpointSink, DirCheckpoints, DirSink, Sink};
pub use train::{DpOptions, Progress, Summary, TrainOptions, Trainer};
pub use weights::BaseModel;

/// Everything that can go wrong, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A model, tokenizer, adapter or checkpoint file is malformed.
    #[error("{0}")]
    Format(String),
    /// A valid file uses something this trainer does not implement.
    #[error("{0}")]
    Unsupported(String),
    /// Bad options or training data.
    #[error("{0}")]
    Input(String),
    #[error("tensor computation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io { path: path.to_path_buf(), source }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A deterministic random stream for `seed`.
pub(crate) fn rng(seed: u64) -> rand_chacha::ChaCha8Rng {
    rand::SeedableRng::seed_from_u64(seed)
}

/// A deterministic random stream for (`seed`, `purpose`, `index`), independent of every other, so
/// that any step's randomness can be recreated when training resumes.
pub(crate) fn stream(seed: u64, purpose: u64, index: u64) -> rand_chacha::ChaCha8Rng {
    let mut z = seed ^ purpose.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03);
    // splitmix64 finaliser
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    rng(z ^ (z >> 31))
}

/// The compute device: CUDA GPU `ordinal` when built with the `cuda` feature and asked for,
/// otherwise the CPU.
pub fn device(cuda: Option<usize>) -> Result<Device> {
    match cuda {
        None => Ok(Device::Cpu),
        Some(ordinal) => {
            if cfg!(feature = "cuda") {
                Ok(Device::new_cuda(ordinal)?)
            } else {
                Err(Error::Unsupported(
                    "this build has no CUDA support; rebuild with `--features cuda` (needs nvcc)".into(),
                ))
            }
        }
    }
}

/// Replaces this process (`exec`, same process id, same arguments) with this executable running
/// under the settings that make CPU training faster but can only be made before a process
/// starts. Returns without doing anything when this process already runs under them (or was told
/// to skip them with `COFFRE_MALLOC_TUNED`), off Linux, or when the `exec` fails (training then
/// runs untuned).
///
/// * glibc's malloc hands blocks above 32 MiB straight back to the kernel, and training allocates
///   and frees tensors of that size many times per step: the kernel then zeroes fresh pages each
///   time (a fifth of a step, measured). Its tunables keep them.
/// * mimalloc (the allocator of `coffre` and `coffre-worker`) hands freed memory back to the
///   kernel after a delay (`MADV_DONTNEED`; 1 s in mimalloc 3) shorter than a training step, so
///   every large tensor of the next step faulted in freshly zeroed pages again: a quarter of a
///   LoRA step on SmolLM2-135M went to the kernel's `clear_page`. `MIMALLOC_PURGE_DELAY=-1` keeps
///   freed memory for reuse; the footprint stays at its peak, which the first step reaches anyway.
/// * candle's own thread pool for element-wise operations spins beside the thread pool of the
///   matrix products and the trainer's per-thread batch shards; `CANDLE_NUM_THREADS=1` leaves the
///   cores to those. On a 2-vCPU machine the spinning pool cost a sixth of a LoRA step on
///   SmolLM2-135M.
///
/// A caller's own `CANDLE_NUM_THREADS` or `MIMALLOC_PURGE_DELAY` is kept.
pub fn restart_tuned() {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("COFFRE_MALLOC_TUNED").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut command = std::process::Command::new(exe);
        for (name, value) in [("CANDLE_NUM_THREADS", "1"), ("MIMALLOC_PURGE_DELAY", "-1")] {
            if std::env::var_os(name).is_none() {
                command.env(name, value);
            }
        }
        let _failed = command
            .args(std::env::args_os().skip(1))
            .env("COFFRE_MALLOC_TUNED", "1")
            .env("MALLOC_MMAP_THRESHOLD_", "4294967296")
            .env("MALLOC_TRIM_THRESHOLD_", "68719476736")
            .env("MALLOC_TOP_PAD_", "1073741824")
            .exec();
    }
}
