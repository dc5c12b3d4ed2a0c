//! Evidence from a Confidential Containers pod: the attestation agent's local REST API
//! (`api-server-rest`, `127.0.0.1:8006` by default, guest-components v0.21 or later).
//!
//! - CPU: `GET /aa/evidence?runtime_data=B64URL&encoding=base64`. With `encoding=base64` the
//!   agent decodes the parameter to raw bytes and puts exactly those into the hardware's
//!   REPORT_DATA (it refuses more than 64 bytes and zero-pads fewer): the worker sends the 64
//!   bytes of Coffre's binding, so the report binds nonce, keys and job exactly as on a plain
//!   confidential VM. Older agents know only text there (at most 64 bytes of it), which cannot
//!   carry the binding; they answer 400 to `encoding` and the worker says so.
//! - GPUs: `GET /aa/additional-evidence?runtime_data=B64URL&encoding=base64` with the 32-byte
//!   GPU nonce derived from the report data ([`coffre_attestation::composite::gpu_nonce`]); the
//!   agent's NVIDIA attester uses the first 32 bytes as the SPDM nonce.
//!
//! The answers are turned back into raw reports by [`coffre_attestation::coco`] and verified by
//! the vault like any other evidence. The agent is reached over plain HTTP, so only a loopback
//! address is accepted: evidence is not secret, but a remote "agent" would be somebody else's
//! machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffre_api::{RawCpu, RawGpu};
use coffre_attestation::coco;

/// The attestation agent's REST API.
#[derive(Debug, Clone)]
pub struct Agent {
    host: String,
    port: u16,
}

/// The agent's default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8006";

/// The longest answer read (evidence is a few KiB; eight GPUs' certificate chains ~100 KiB).
const MAX_ANSWER: u64 = 8 << 20;

impl Agent {
    /// Parses `http://HOST:PORT` with a loopback IP address as HOST.
    pub fn new(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("--aa-url {url}: the attestation agent's API is plain http://, on loopback"))?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("--aa-url {url}: bad port"))?),
            None => (rest, 80),
        };
        // An IP literal: a name would depend on the resolver.
        let loopback = host.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback())
            || host.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>().is_ok_and(|a| a.is_loopback());
        if !loopback {
            return Err(format!("--aa-url {url}: the attestation agent must be on this machine's loopback"));
        }
        Ok(Self { host: host.to_owned(), port })
    }

    /// `GET path`, the body of a 200.
    fn get(&self, path: &str) -> Result<Vec<u8>, String> {
        let addr = format!("{}:{}", self.host.trim_matches(['[', ']']), self.port);
        let addr = if self.host.starts_with('[') {
            format!("[{}]:{}", self.host.trim_matches(['[', ']']), self.port)
        } else {
            addr
        };
        let mut s = TcpStream::connect(&addr).map_err(|e| {
            format!("cannot reach the attestation agent at {addr}: {e} (is api-server-rest running with the attestation feature?)")
        })?;
        // Evidence from the hardware can take a few seconds (GPU SPDM exchanges especially).
        s.set_read_timeout(Some(Duration::from_secs(120))).ok();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: */*\r\nConnection: close\r\n\r\n", self.host)
            .map_err(|e| format!("attestation agent: {e}"))?;
        let mut r = BufReader::new(s.take(MAX_ANSWER + 64 * 1024));
        let mut status = String::new();
        r.read_line(&mut status).map_err(|e| format!("attestation agent: {e}"))?;
        let code: u16 = status
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("attestation agent: not an HTTP answer ({:?})", status.trim()))?;
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            r.read_line(&mut line).map_err(|e| format!("attestation agent: {e}"))?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse::<u64>().ok(),
                    "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
                    _ => {}
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                r.read_line(&mut size).map_err(|e| format!("attestation agent: {e}"))?;
                let n = u64::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| "attestation agent: malformed chunked answer".to_owned())?;
                if n == 0 {
                    break;
                }
                if (body.len() as u64).checked_add(n).is_none_or(|total| total > MAX_ANSWER) {
                    return Err("attestation agent: answer too large".into());
                }
                let at = body.len();
                body.resize(at + n as usize, 0);
                r.read_exact(&mut body[at..]).map_err(|e| format!("attestation agent: {e}"))?;
                let mut crlf = [0u8; 2];
                r.read_exact(&mut crlf).map_err(|e| format!("attestation agent: {e}"))?;
            }
        } else if let Some(n) = length {
            if n > MAX_ANSWER {
                return Err("attestation agent: answer too large".into());
            }
            body.resize(n as usize, 0);
            r.read_exact(&mut body).map_err(|e| format!("attestation agent: {e}"))?;
        } else {
            r.read_to_end(&mut body).map_err(|e| format!("attestation agent: {e}"))?;
        }
        match code {
            200 => Ok(body),
            400 if path.contains("encoding=base64") => Err(format!(
                "the attestation agent refused {}: {} — agents before guest-components v0.21 take report data only as text and cannot carry Coffre's 64-byte binding; update the pod's guest components",
                path.split('?').next().unwrap_or(path),
                String::from_utf8_lossy(&body).trim()
            )),
            _ => Err(format!("the attestation agent answered {code}: {}", String::from_utf8_lossy(&body).trim())),
        }
    }

    /// CPU evidence binding `report_data`.
    pub fn cpu(&self, report_data: &[u8; 64]) -> Result<RawCpu, String> {
        let body =
            self.get(&format!("/aa/evidence?runtime_data={}&encoding=base64", URL_SAFE_NO_PAD.encode(report_data)))?;
        let v: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("the attestation agent's evidence is not JSON: {e}"))?;
        if v.get("attestation_report").is_some() {
            let c = coco::snp_from_aa(&body)?;
            if c.report.get(0x50..0x90) != Some(report_data.as_slice()) {
                return Err("the attestation agent's report does not carry the report data asked for".into());
            }
            Ok(coffre_api::RawCpu::from_collected(c))
        } else if v.get("quote").is_some() {
            let (quote, _eventlog) = coco::tdx_from_aa(&body)?;
            // The vault completes the quote with Intel's collateral from its store.
            Ok(RawCpu::Tdx { quote, collateral: Vec::new() })
        } else {
            Err("the attestation agent's evidence is neither SEV-SNP nor TDX (is this pod in a confidential VM?)"
                .into())
        }
    }

    /// Every GPU's evidence for `nonce`.
    pub fn gpus(&self, nonce: &[u8; 32]) -> Result<Vec<RawGpu>, String> {
        let body = self
            .get(&format!("/aa/additional-evidence?runtime_data={}&encoding=base64", URL_SAFE_NO_PAD.encode(nonce)))?;
        let none = body.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde_json::Value>(&body)
                .is_ok_and(|v| v.as_object().is_some_and(|m| m.is_empty()));
        if none {
            return Err("--gpu coco: the attestation agent has no attestable GPU in this pod".into());
        }
        Ok(coco::nvidia_from_aa(&body)?
            .into_iter()
            .map(|g| RawGpu { report: g.report, chain: g.chain, rims: Vec::new() })
            .collect())
    }
}
