//! Inputs, outputs and progress for the CLI.
//!
//! Outputs written to a path appear only on success: data goes to a temporary file in the same
//! directory (mode 0600), which is synced and renamed into place at the end, then the directory
//! is synced. A failure or a crash leaves no half-written file behind.

use std::fs::{self, File};
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{CliError, CliResult};

/// Inputs at least this large get a progress bar.
pub const PROGRESS_THRESHOLD: u64 = 64 * 1024 * 1024;

/// A file or standard input.
pub struct Input {
    pub reader: Box<dyn Read>,
    /// Size in bytes when the input is a regular file.
    pub len: Option<u64>,
    pub name: String,
}

impl Input {
    pub fn open(path: &Path) -> CliResult<Self> {
        if path.as_os_str() == "-" {
            let stdin = io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::usage("refusing to read data from a terminal")
                    .hint("give a file path, or pipe the data in: `cat FILE | coffre ... -`"));
            }
            return Ok(Self { reader: Box::new(stdin.lock()), len: None, name: "standard input".into() });
        }
        let file = File::open(path).map_err(|e| CliError::io("open", path, &e))?;
        let meta = file.metadata().map_err(|e| CliError::io("read", path, &e))?;
        if meta.is_dir() {
            return Err(CliError::usage(format!("{} is a directory", path.display())).hint(
                "seal one file at a time; to seal a directory, archive it first (`tar -cf - DIR | coffre seal ... -`)",
            ));
        }
        let len = meta.is_file().then_some(meta.len());
        Ok(Self { reader: Box::new(file), len, name: path.display().to_string() })
    }
}

enum Sink {
    Temp { file: tempfile::NamedTempFile, dest: PathBuf, force: bool },
    Direct(Box<dyn Write>),
}

/// An output that appears only when [`Output::commit`] succeeds.
pub struct Output {
    sink: Sink,
    pub name: String,
}

impl Output {
    /// `-` is standard output (refused when it is a terminal and `binary` is set). A path that
    /// names a device or pipe (e.g. /dev/null) is written directly; a regular path atomically.
    pub fn create(path: &Path, force: bool, binary: bool) -> CliResult<Self> {
        if path.as_os_str() == "-" {
            let stdout = io::stdout();
            if binary && stdout.is_terminal() {
                return Err(CliError::usage("refusing to write binary data to the terminal")
                    .hint("give an output file with -o FILE, or redirect: `... -o - > FILE`"));
            }
            return Ok(Self { sink: Sink::Direct(Box::new(stdout.lock())), name: "standard output".into() });
        }
        match fs::metadata(path) {
            Ok(meta) if !meta.is_file() && !meta.is_dir() => {
                let file = fs::OpenOptions::new().write(true).open(path).map_err(|e| CliError::io("open", path, &e))?;
                return Ok(Self { sink: Sink::Direct(Box::new(file)), name: path.display().to_string() });
            }
            Ok(meta) if meta.is_dir() => {
                return Err(CliError::usage(format!("{} is a directory", path.display()))
                    .hint("give a file name for the output"));
            }
            Ok(_) if !force => {
                return Err(CliError::usage(format!("{} already exists", path.display()))
                    .hint("choose another output path, or pass --force to replace it"));
            }
            _ => {}
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".coffre-partial-")
            .tempfile_in(&dir)
            .map_err(|e| CliError::io("create a file in", &dir, &e))?;
        Ok(Self { sink: Sink::Temp { file, dest: path.to_path_buf(), force }, name: path.display().to_string() })
    }

    /// Makes the output durable and visible under its name.
    pub fn commit(self) -> CliResult {
        match self.sink {
            Sink::Direct(mut w) => w.flush().map_err(|e| CliError::io("write", Path::new(&self.name), &e)),
            Sink::Temp { file, dest, force } => {
                file.as_file().sync_all().map_err(|e| CliError::io("write", &dest, &e))?;
                let persisted = if force { file.persist(&dest) } else { file.persist_noclobber(&dest) };
                persisted.map_err(|e| CliError::io("create", &dest, &e.error))?;
                if let Some(dir) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    // Make the rename itself durable; a failure here leaves a correct file, so
                    // it is not reported.
                    let _ = File::open(dir).and_then(|d| d.sync_all());
                }
                Ok(())
            }
        }
    }
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Temp { file, .. } => file.write(buf),
            Sink::Direct(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Temp { file, .. } => file.flush(),
            Sink::Direct(w) => w.flush(),
        }
    }
}

/// A progress bar on standard error for inputs of at least 64 MiB (indicatif hides it when
/// standard error is not a terminal). For inputs of unknown size it appears once 64 MiB went by.
pub struct Progress {
    bar: ProgressBar,
    shown: bool,
}

impl Progress {
    pub fn new(verb: &str, total: Option<u64>) -> Self {
        let big = total.is_some_and(|t| t >= PROGRESS_THRESHOLD);
        let bar = match total {
            Some(t) => ProgressBar::with_draw_target(Some(t), ProgressDrawTarget::hidden()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()),
        };
        let template = if total.is_some() {
            "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
        } else {
            "{prefix} {binary_bytes} {binary_bytes_per_sec}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(verb.to_owned());
        let mut progress = Self { bar, shown: false };
        if big {
            progress.show();
        }
        progress
    }

    fn show(&mut self) {
        self.bar.set_draw_target(ProgressDrawTarget::stderr());
        self.bar.enable_steady_tick(Duration::from_millis(200));
        self.shown = true;
    }

    pub fn add(&mut self, n: u64) {
        self.bar.inc(n);
        if !self.shown && self.bar.position() >= PROGRESS_THRESHOLD {
            self.show();
        }
    }

    /// Sets the position (for callers that report totals, not increments).
    pub fn set(&mut self, position: u64) {
        let now = self.bar.position();
        if position > now {
            self.add(position - now);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Parses sizes such as `4096`, `64KiB`, `100MiB`, `1GiB`, `1.5GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num.trim().parse().map_err(|_| format!("{text:?} is not a size such as 100MiB or 1GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024.0 * 1024.0,
        "mb" => 1e6,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        other => return Err(format!("unknown size unit {other:?}; use B, KiB, MiB, GiB or TiB")),
    };
    let bytes = value * mult;
    if !(0.0..=(u64::MAX as f64)).contains(&bytes) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1.5 GB"), Ok(1_500_000_000));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(bytes(100 * 1024 * 1024), "100.0 MiB");
        assert_eq!(bytes(12), "12 B");
    }
}
