//! The collateral store: vendor certificates, CRLs and reference manifests an appraisal needs,
//! imported from an offline mirror (`coffred collateral import DIR`). The vault never fetches
//! anything from a vendor service.
//!
//! | kind | name | what |
//! |---|---|---|
//! | `vcek` | the AMD KDS URL of that chip and TCB | a VCEK (DER) |
//! | `crl` | `Milan`, `Genoa`, `Turin` | AMD's CRL for the product (DER) |
//! | `rim` | the firmware version (`580.95.05`, `96.00.74.00.1A`) | an NVIDIA driver or VBIOS RIM (XML) |
//! | `tdx` | the platform's FMSPC (`B0C06F000000`) | Intel PCS collateral: TCB info, QE identity, CRLs and their chains (dcap-qvl JSON, `*.json`) |
//!
//! A release whose evidence lacks an item the store does not hold either is appraised without it,
//! and the denial names the exact item (the VCEK's KDS URL, the FMSPC's PCS URL) so that an
//! operator can mirror it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coffre_api::{RawCpu, RawEvidence};
use coffre_attestation::snp::{Product, Report, Tcb, vek};
use coffre_attestation::tdx::TdxCollateral;
use coffre_attestation::x509::{Certificate, Crl, certificates_from_pem_or_der};
use sqlx::Row;

use crate::db::Pool;

/// What one import did.
#[derive(Debug, Default)]
pub struct Imported {
    /// (kind, name) stored.
    pub stored: Vec<(String, String)>,
    /// Files skipped, with why.
    pub skipped: Vec<(String, String)>,
}

/// The KDS URL that names a VCEK.
fn vcek_name(cert: &Certificate) -> Option<String> {
    let ext = vek::parse(cert);
    let product = ext.product()?;
    let tcb = ext.tcb?;
    let hwid = ext.hwid?;
    let mut chip = [0u8; 64];
    chip.get_mut(..hwid.len())?.copy_from_slice(&hwid);
    Some(vek::kds_vcek_url(product, &chip, &tcb))
}

fn classify(path: &Path, bytes: &[u8]) -> Result<Vec<(String, String, Vec<u8>)>, String> {
    let name = path.file_name().map(|n| n.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if name.ends_with(".xml") {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        let version = text
            .split("colloquialVersion=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .ok_or("an XML file without a RIM's colloquialVersion")?;
        return Ok(vec![("rim".into(), version.to_owned(), bytes.to_vec())]);
    }
    if name.ends_with(".json") {
        // Intel PCS collateral for one FMSPC, in dcap-qvl's JSON form (what `coffre attest`
        // and the worker's TDX evidence carry): filed under the FMSPC its TCB info names.
        TdxCollateral::from_dcap_json(bytes).map_err(|e| format!("not TDX collateral (dcap-qvl JSON): {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let tcb: serde_json::Value =
            serde_json::from_str(doc["tcb_info"].as_str().unwrap_or_default()).map_err(|e| format!("tcb_info: {e}"))?;
        let fmspc = tcb["fmspc"].as_str().ok_or("tcb_info names no fmspc")?.to_ascii_uppercase();
        return Ok(vec![("tdx".into(), fmspc, bytes.to_vec())]);
    }
    if let Ok(crl) = Crl::from_der(bytes) {
        let product = Product::ALL
            .into_iter()
            .find(|p| crl.issuer_cn.ends_with(p.name()))
            .ok_or_else(|| format!("a CRL by {:?}, not an AMD ARK", crl.issuer_cn))?;
        return Ok(vec![("crl".into(), product.name().to_owned(), bytes.to_vec())]);
    }
    let certs = certificates_from_pem_or_der(bytes)?;
    let mut out = Vec::new();
    for der in certs {
        let cert = Certificate::from_der(&der)?;
        if let Some(url) = vcek_name(&cert) {
            out.push(("vcek".into(), url, der));
        }
    }
    if out.is_empty() {
        return Err("no VCEK, CRL or RIM in it".into());
    }
    Ok(out)
}

/// Imports every file under `dir` (recursively); idempotent.
pub async fn import(pool: &Pool, dir: &Path) -> anyhow::Result<Imported> {
    let mut report = Imported::default();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| anyhow::anyhow!("{}: {e}", d.display()))? {
            let path = e?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path)?;
            match classify(&path, &bytes) {
                Ok(items) => {
                    for (kind, name, bytes) in items {
                        sqlx::query(
                            "INSERT INTO collateral (kind, name, bytes) VALUES ($1, $2, $3) \
                             ON CONFLICT (kind, name) DO UPDATE SET bytes = excluded.bytes",
                        )
                        .bind(&kind)
                        .bind(&name)
                        .bind(bytes)
                        .execute(pool)
                        .await?;
                        report.stored.push((kind, name));
                    }
                }
                Err(why) => report.skipped.push((path.display().to_string(), why)),
            }
        }
    }
    Ok(report)
}

/// How long a stored item is served from memory before the database is asked again (an
/// imported CRL takes effect within this time on a running vault).
const HELD_FOR: Duration = Duration::from_secs(60);
/// How long "not in the store" is remembered (an operator mirroring a missing VCEK retries soon).
const ABSENT_FOR: Duration = Duration::from_secs(5);
/// Items held in memory before the cache starts over (a fleet of 2,250 chips needs 2,250 VCEKs).
const MAX_HELD: usize = 16_384;

type Held = (Instant, Option<Arc<Vec<u8>>>);

/// The collateral store with a read-through memory cache. Collateral is public (vendor
/// certificates, CRLs, reference manifests), so holding it in memory costs nothing in secrecy;
/// it spares every release some seventeen database reads.
#[derive(Debug)]
pub struct Collateral {
    pool: Pool,
    held: parking_lot::Mutex<HashMap<(String, String), Held>>,
}

impl Collateral {
    /// The store in `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool, held: parking_lot::Mutex::new(HashMap::new()) }
    }

    async fn get(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        let key = (kind.to_owned(), name.to_owned());
        if let Some((at, item)) = self.held.lock().get(&key) {
            let fresh = at.elapsed() < if item.is_some() { HELD_FOR } else { ABSENT_FOR };
            if fresh {
                return Ok(item.as_ref().map(|b| b.to_vec()));
            }
        }
        let row = sqlx::query("SELECT bytes FROM collateral WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let item: Option<Vec<u8>> = row.map(|r| r.try_get("bytes")).transpose()?;
        let mut held = self.held.lock();
        if held.len() >= MAX_HELD {
            held.clear();
        }
        held.insert(key, (Instant::now(), item.clone().map(Arc::new)));
        Ok(item)
    }
}

/// Fills what `evidence` lacks from the store; returns the items that were needed and missing
/// (as failed-check texts: the exact item to mirror).
pub async fn fill(store: &Collateral, evidence: &mut RawEvidence) -> Result<Vec<String>, sqlx::Error> {
    let mut missing = Vec::new();
    if let RawCpu::Snp { report, vek: vek_slot, crl, .. } = &mut evidence.cpu
        && let Ok((r, _)) = Report::parse(report)
    {
        let products: Vec<Product> = match r.cpuid_product() {
            Some(p) => vec![p],
            None => Product::ALL.to_vec(),
        };
        if vek_slot.is_none() && r.signing_key() == coffre_attestation::snp::SigningKey::Vcek {
            let mut urls = Vec::new();
            for p in &products {
                let (tcb, _): (Tcb, bool) = Tcb::decode(r.reported_tcb_raw(), *p);
                let url = vek::kds_vcek_url(*p, &r.chip_id(), &tcb);
                if let Some(der) = store.get("vcek", &url).await? {
                    *vek_slot = Some(der);
                    break;
                }
                urls.push(url);
            }
            if vek_slot.is_none() {
                missing.push(format!("the VCEK for this chip and TCB: {}", urls.join(" or ")));
            }
        }
        // The store's CRL unless the evidence brings a newer one: a worker must not be able
        // to present an old CRL from before its chip's revocation.
        for p in &products {
            if let Some(stored) = store.get("crl", p.name()).await? {
                let stored_date = Crl::from_der(&stored).map(|c| c.this_update).ok();
                let given_date = crl.as_deref().and_then(|c| Crl::from_der(c).ok()).map(|c| c.this_update);
                if given_date.is_none() || stored_date >= given_date {
                    *crl = Some(stored);
                }
                break;
            }
        }
    }
    // A TDX quote without collateral: Intel's for the platform's FMSPC, from the store.
    if let RawCpu::Tdx { quote, collateral } = &mut evidence.cpu
        && collateral.is_empty()
    {
        match coffre_attestation::tdx::quote::pck_fmspc(quote) {
            Ok(fmspc) => match store.get("tdx", &fmspc).await? {
                Some(c) => *collateral = c,
                None => missing.push(format!(
                    "Intel PCS collateral for FMSPC {fmspc}: https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc={fmspc} with the QE identity and PCK CRL, as dcap-qvl JSON (coffred collateral import)"
                )),
            },
            Err(e) => missing.push(format!("Intel PCS collateral for this quote (its FMSPC cannot be read: {e})")),
        }
    }
    for gpu in &mut evidence.gpus {
        if !gpu.rims.is_empty() {
            continue;
        }
        if let Ok(spdm) = coffre_attestation::nvidia::spdm::SpdmReport::parse(&gpu.report) {
            for version in [&spdm.opaque.driver_version, &spdm.opaque.vbios_version].into_iter().flatten() {
                if let Some(xml) = store.get("rim", version).await? {
                    gpu.rims.push(xml);
                }
            }
        }
    }
    Ok(missing)
}
